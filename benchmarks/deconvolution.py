"""Deconvolution + auralisation of every feature of the Choi CNN on one 4-s clip.

All 5 layers × 64 features (320 waveforms) computed the tfaural way (features as a
batch axis, one shared forward pass, ``tf.function``) against two per-feature loops
measured side by side in the same run: the reference code's way (eager ops
dispatched from Python, forward + deconvolution + inverse STFT for one feature per
call) and a stronger baseline (the same loop calling a compiled ``tf.function`` per
feature). Loop times are extrapolated from an evenly spread sample of features.

Targets (issue 6): batched ≤ 2 s on this 2-core CPU, and ≥ 20× the per-feature loop.

Side by side (issue 16): the general deconvnet (:class:`tfaural.deconv.DeconvNet`, which walks
any Keras graph) against the explicit block walk it replaced (``explicit_walk.py``), both
deconvolving every layer with one shared forward pass, on the same Choi CNN and clip and on a
SampleCNN 3^9 segment (32 features of each of its 11 levels), timed alternately.

Run ``python benchmarks/deconvolution.py [--quick] [--run RUN_DIR]``; prints one JSON object.

``--quick`` (smoke mode: it checks that every path runs, not the speed) shrinks everything: a Choi CNN of 2
layers of 16 maps on a 1-s clip, one timed batched run (after its warm-up), one feature per layer in each
per-feature loop, one round of each walk comparison, on that Choi CNN and on a tiny 3^3 SampleCNN
(8 features of each of its 4 levels). Its figures only show that the code ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
import explicit_walk
import numpy as np
import tensorflow as tf
from _timing import compiled, environment, run_times

from tfaural import auralise, deconv, spectral
from tfaural.models import choi_cnn, samplecnn_preset
from tfaural.models.samplecnn import samplecnn_model


def _clip(sample_rate: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    y = 0.4 * np.sin(2 * np.pi * (110 * t + 200 * t**2)) + 0.05 * rng.standard_normal(t.size)
    y[:: sample_rate // 4] += 0.5  # clicks: onsets for the first-layer detectors
    return np.clip(y, -1, 1).astype(np.float32)[None]


def walk_comparison(model: object, x: tf.Tensor, *, repeats: int, features: list[int] | None = None
                    ) -> dict[str, object]:
    """Median seconds of the general and the explicit walk over every level, timed alternately."""
    nets = {"general": deconv.DeconvNet(model), "explicit": explicit_walk.DeconvNet(model)}
    functions = {name: compiled(lambda y, net=net: net.deconvolve_layers(y, features=features))
                 for name, net in nets.items()}
    times: dict[str, list[float]] = {name: [] for name in functions}
    for fn in functions.values():  # trace and warm up
        run_times(lambda fn=fn: fn(x), warmup=1, repeats=1)
    for _ in range(repeats):
        for name, fn in functions.items():
            times[name] += run_times(lambda fn=fn: fn(x), warmup=0, repeats=1)
    general, explicit = statistics.median(times["general"]), statistics.median(times["explicit"])
    return {"general_seconds": round(general, 3), "explicit_seconds": round(explicit, 3),
            "explicit_over_general": round(explicit / general, 2)}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode (seconds): a 2-layer Choi CNN of 16 maps per layer, a 1-s clip, one "
                             "repeat, one loop sample per layer, a tiny 3^3 SampleCNN")
    parser.add_argument("--run", default=None, help="a training run directory (default: random weights)")
    args = parser.parse_args(argv)

    if args.run:
        from tfaural.training.run import load_run

        model, _ = load_run(args.run)
    else:  # the smoke run's Choi CNN has 2 layers of 16 maps: it checks the code (tracing grows with the layers)
        model = choi_cnn(n_outputs=3, **({"n_filters": 16, "n_layers": 2} if args.quick else {}))
    config = model.tfaural_config
    clip_seconds = 1.0 if args.quick else 4.0
    waveform = tf.constant(_clip(config.sample_rate, clip_seconds))
    auraliser = auralise.Auraliser(model)
    levels = auraliser.net.levels
    n_maps = auraliser.net.n_features(levels[-1])

    batched = compiled(lambda y: {k: v.audio for k, v in auraliser.layers(y, mode="phase").items()})
    repeats = 1 if args.quick else 5
    batched_times = run_times(lambda: batched(waveform), warmup=1, repeats=repeats)

    per_layer = {
        layer: compiled(
            lambda y, f, layer=layer: auraliser(y, layer=layer, features=f, mode="phase").audio,
            input_signature=[tf.TensorSpec(waveform.shape, tf.float32), tf.TensorSpec([1], tf.int32)],
        )
        for layer in levels
    }
    samples_per_layer = 1 if args.quick else 6
    loop_calls = 0
    for layer in levels:  # warm up (trace) every per-layer function
        per_layer[layer](waveform, tf.constant([0])).numpy()
    start = time.perf_counter()
    for layer in levels:
        for feature in np.linspace(0, n_maps - 1, samples_per_layer).astype(np.int32):
            per_layer[layer](waveform, tf.constant([feature])).numpy()
            loop_calls += 1
    loop_per_call = (time.perf_counter() - start) / loop_calls
    # The reference code's way: eager ops dispatched from Python, one feature per call.
    start = time.perf_counter()
    eager_calls = 0
    for layer in levels:
        for feature in np.linspace(0, n_maps - 1, max(1, samples_per_layer // 2)).astype(np.int32):
            auraliser(waveform, layer=layer, features=[int(feature)], mode="phase").audio.numpy()
            eager_calls += 1
    eager_per_call = (time.perf_counter() - start) / eager_calls
    total_features = len(levels) * n_maps
    loop_seconds = loop_per_call * total_features
    batched_seconds = statistics.median(batched_times)
    magnitude = spectral.magnitude(waveform, n_fft=config.n_fft, hop_length=config.hop_length)
    walks = {f"choi_{len(levels) * n_maps}_features": walk_comparison(model, magnitude, repeats=repeats)}
    if args.quick:  # a tiny 3^3 model (4 levels), 8 features per level
        sample_model = samplecnn_model(filter_sizes=(3,) * 3, channels=(16, 32), front_filters=16, top_filters=64)
        walk_name, walk_features = "samplecnn_tiny_3_3_8_features", list(range(8))
    else:
        sample_model = samplecnn_preset(22050)
        walk_name, walk_features = "samplecnn_3_9_32_features_x_11_levels", list(range(32))
    length = sample_model.tfaural_config.input_length
    segment = tf.constant(np.random.default_rng(1).standard_normal((1, length)).astype(np.float32) * 0.3)
    walks[walk_name] = walk_comparison(sample_model, segment, repeats=1 if args.quick else 3, features=walk_features)
    result = {
        "benchmark": "deconvolution_auralisation",
        "model": "choi_cnn" + (f" ({args.run})" if args.run else " (random weights)"),
        "clip_seconds": clip_seconds,
        "layers": list(levels),
        "features_per_layer": n_maps,
        "waveforms": total_features,
        "batched_seconds_median": round(batched_seconds, 3),
        "batched_seconds_all": [round(t, 3) for t in batched_times],
        "eager_loop_seconds_per_feature": round(eager_per_call, 4),
        "eager_loop_seconds_extrapolated": round(eager_per_call * total_features, 2),
        "eager_loop_features_timed": eager_calls,
        "speedup_vs_eager_loop": round(eager_per_call * total_features / batched_seconds, 1),
        "compiled_loop_seconds_per_feature": round(loop_per_call, 4),
        "compiled_loop_seconds_extrapolated": round(loop_seconds, 2),
        "compiled_loop_features_timed": loop_calls,
        "speedup_vs_compiled_loop": round(loop_seconds / batched_seconds, 1),
        "target_seconds": 2.0,
        "target_speedup": 20.0,
        "meets_time_target": batched_seconds <= 2.0,
        "meets_speedup_target": eager_per_call * total_features / batched_seconds >= 20.0,
        "general_vs_explicit_walk": walks,
        "environment": environment(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
