"""Every feature of an MTT_vgg tagger deconvolved and auralised: time, GFLOP/s and speed-up (issue 16).

All 5 conv layers × 128 features = 640 features of one 3-s excerpt (16 kHz, 96 mel bands,
187 frames) of a ``musicnn_tagger("vgg")`` with MTT_vgg's pools (the first overlapping in
time) and random weights, batch-norm scales of both signs (the weights do not change the
work), through :class:`tfaural.auralise.MelAuraliser` (features as a batch axis, one shared
forward pass, ``tf.function``): the deconvnet down to log-mel, mel → linear power
(pseudo-inverse), the excerpt's phase, inverse STFT.

Reported:

* the time of all 640 (median of several runs after a warm-up) and the GFLOP/s it reaches,
  counting the deconvolution's essential work (the top step of each feature as a depthwise
  convolution, every layer below as a full transposed convolution: ~0.62 TFLOP), as a fraction
  of the Conv2D ceiling measured in the same run (:func:`ceilings.conv2d_gflops`; target ≥ 0.5);
* the speed-up over per-feature loops timed side by side (target ≥ 20×): the reference
  code's way (eager ops, forward + deconvolution + inversion for one feature per call) and a
  compiled ``tf.function`` per feature; loop times extrapolated from evenly spread features;
* a profile: forward pass, deconvolution per layer, and the auralisation (inversion + inverse
  STFT) timed as separate compiled functions, and (``--profile``) the walk's rules timed
  one by one in eager mode (shares of the total by layer);
* the mel → linear study: quality and speed of the pseudo-inverse, the in-graph NNLS
  (:func:`tfaural.auralise.mel_to_linear_power`) and ``librosa.feature.inverse.mel_to_stft``
  on a rendered piano + drums excerpt (ground truth known) and on the deconvolved maps.

Allocator: with TensorFlow's default CPU allocator every large output is a fresh ``mmap``
whose pages fault in on first touch, which costs more than the arithmetic of the memory-bound
steps (unpooling, ReLU, the last layer); the run therefore sets
``TF_CPU_ALLOCATOR_USE_BFC=true`` (TensorFlow's BFC allocator reuses its buffers), as a user
running many deconvolutions should; ``--default-allocator`` measures without it.

Run ``python benchmarks/deconvnet_mtt_vgg.py [--quick] [--profile] [--default-allocator]``;
prints one JSON object. ``--quick`` (smoke mode: it checks that every path runs, not the speed): 16
features of the first and the last layer (their walks together pass every kind of layer, the overlapping
``pool1`` and the uncovered ``pool5`` included; 16 features take two chunks on the exports' path), one
timed run of each measurement and no warm-up runs beyond the calls that trace (the stage profile's times
include the tracing), one feature of the first layer in each per-feature loop, a short study (the
pseudo-inverse and the default NNLS; librosa's NNLS timed on one map). Its figures only show that the code ran.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "--default-allocator" not in sys.argv:  # read when TensorFlow creates its CPU allocator (first tensor)
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
import keras
import numpy as np
import tensorflow as tf
from _timing import compiled, environment, run_times
from ceilings import conv2d_gflops

from tfaural import auralise, deconv, signals, spectral
from tfaural.models import musicnn_tagger

TARGET_FRACTION = 0.5
TARGET_SPEEDUP = 20.0


def random_mtt_vgg(seed: int = 0) -> keras.Model:
    """MTT_vgg's architecture with random weights and batch-norm statistics (scales of both signs)."""
    return random_musicnn_tagger(seed)


def random_musicnn_tagger(seed: int = 0, **config: Any) -> keras.Model:
    """A ``musicnn_tagger`` (``config``: its keywords; default MTT_vgg's architecture) with random weights and
    batch-norm statistics (scales of both signs), all drawn from ``seed``: the same model in every run."""
    model = musicnn_tagger(**{"architecture": "vgg", **config})
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        initializer = getattr(layer, "kernel_initializer", None)
        if initializer is not None:  # the layer's own initialiser, seeded
            seeded = type(initializer).from_config({**initializer.get_config(), "seed": int(rng.integers(2**31))})
            layer.kernel.assign(seeded(layer.kernel.shape))
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            gamma = rng.uniform(0.3, 1.5, n) * rng.choice([-1.0, 1.0], n, p=[0.2, 0.8])
            layer.set_weights([gamma, rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), rng.uniform(0.5, 2.0, n)])
    return model


def excerpt(sample_rate: int, n_samples: int) -> np.ndarray:
    """Piano chords in six voicings over an 8-beat drum pattern (FluidSynth), peak 0.8."""
    seconds = n_samples / sample_rate
    parts = [signals.Part(program=0, notes=signals.chord_positions("major", root=60, positions=6, duration=seconds)),
             signals.drum_pattern("8-beat", tempo=120.0, duration=seconds)]
    y = signals.render(parts, sample_rate=sample_rate, duration=seconds)[:n_samples]
    return (0.8 * y / np.abs(y).max()).astype(np.float32)


def deconvolution_flops(model: keras.Model, levels: dict[int, str], n_features: int) -> float:
    """FLOPs (2 per multiply-add) of deconvolving ``n_features`` features of every level.

    The seeded layer's convolution is a depthwise convolution per feature (one input map),
    every convolution below it a full transposed convolution over all channels.
    """
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    total = 0.0
    for name in levels.values():
        top = max(i for i, conv in enumerate(convs) if _depends(model, name, conv.name))
        for i, conv in enumerate(convs[: top + 1]):
            _, height, width, c_in = conv.input.shape
            taps = int(np.prod(conv.kernel.shape[:2]))
            c_out = 1 if i == top else int(conv.kernel.shape[-1])
            total += 2.0 * n_features * height * width * taps * c_in * c_out
    return total


def _depends(model: keras.Model, name: str, conv_name: str) -> bool:
    names = [layer.name for layer in model.layers]
    return names.index(conv_name) < names.index(name)


def profile_rules(model: keras.Model, mel: tf.Tensor, levels: list[int], features: tf.Tensor, *,
                  warmup: bool = True) -> dict[str, Any]:
    """Each backward rule timed in eager mode (synchronised after every rule), deconvolving ``features`` of every
    level: shares by layer. ``warmup``: one untimed deconvolution of the first level first."""
    net = deconv.DeconvNet(model)
    times: dict[str, float] = collections.defaultdict(float)

    def timed(rule: Any) -> Any:
        def run(step: Any, *args: Any) -> Any:
            start = time.perf_counter()  # eager ops on the CPU run synchronously: no need to fetch results
            out = rule(step, *args)
            times[f"{type(step.layer).__name__} ({step.layer.name})"] += time.perf_counter() - start
            return out
        return run

    lazy = list(deconv._LAZY_RULES)
    for name in net.layer_names.values():
        walk = net._walk_to(name)
        wrapped = tuple(timed(rule) for rule in walk.rules)
        lazy += [w for rule, w in zip(walk.rules, wrapped) if rule in deconv._LAZY_RULES]
        net._walks[name] = dataclasses.replace(walk, rules=wrapped)
    saved, deconv._LAZY_RULES = deconv._LAZY_RULES, tuple(lazy)
    try:
        if warmup:
            net(mel, layer=levels[0], features=features)  # warm-up
        times.clear()
        start = time.perf_counter()
        for level in levels:
            net(mel, layer=level, features=features).numpy()
        total = time.perf_counter() - start
    finally:
        deconv._LAZY_RULES = saved
    by_kind: dict[str, float] = collections.defaultdict(float)
    for key, seconds in times.items():
        by_kind[key.split(" ")[0]] += seconds
    return {
        "eager_total_seconds": round(total, 2),
        "share_by_layer_type": {k: round(v / total, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top_rules": {k: round(v / total, 3) for k, v in sorted(times.items(), key=lambda kv: -kv[1])[:8]},
    }


def mel_inversion_study(model: keras.Model, waveform: np.ndarray, *, quick: bool) -> dict[str, Any]:
    """Pseudo-inverse vs in-graph NNLS vs librosa's NNLS: quality and speed."""
    import librosa

    config = model.tfaural_config
    fb = spectral.mel_filterbank(sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels)
    magnitude = np.abs(spectral.stft(waveform, n_fft=config.n_fft, hop_length=config.hop_length).numpy())
    power = magnitude**2
    mel = fb @ power

    def metrics(estimate_power: np.ndarray) -> dict[str, float]:
        estimate = np.sqrt(np.maximum(estimate_power, 0))
        floor = 1e-5 * magnitude.max()
        lsd = np.sqrt(np.mean((20 * np.log10(np.maximum(estimate, floor) / np.maximum(magnitude, floor))) ** 2))
        return {
            "mel_relative_error": float(np.linalg.norm(fb @ estimate_power - mel) / np.linalg.norm(mel)),
            "spectral_convergence": float(np.linalg.norm(estimate - magnitude) / np.linalg.norm(magnitude)),
            "log_spectral_distance_db": float(lsd),
        }

    result: dict[str, Any] = {"signal": "piano chords + drums, 3 s, 16 kHz (true STFT known)"}
    # Deconvolved maps of every layer (no ground truth: how well each inversion keeps the mel maps).
    auraliser = auralise.MelAuraliser(model)
    features = list(range(0, 128, 32 if quick else 16))
    maps = auraliser.net.deconvolve_layers(auraliser.mel_input(tf.constant(waveform[None]))[1],
                                           features=features)
    compression = auraliser.compression
    assert isinstance(compression, spectral.Log1p)  # musicnn's log10(1 + C m)
    mel_maps = tf.concat([spectral.log10_decompress(tf.nn.relu(m[0]), compression.c) for m in maps.values()], 0)
    n_maps = int(mel_maps.shape[0])
    for name, iterations in (("pinv", 0), ("nnls_10", 10), ("nnls", auralise.NNLS_ITERATIONS), ("nnls_200", 200)):
        if quick and name in ("nnls_10", "nnls_200"):
            continue
        inversion = "pinv" if name == "pinv" else "nnls"
        fn = compiled(lambda m, inversion=inversion, iterations=iterations: auralise.mel_to_linear_power(
            m, fb, inversion=inversion, iterations=iterations))
        estimate = fn(tf.constant(mel, tf.float32)).numpy()
        seconds = statistics.median(run_times(lambda fn=fn: fn(mel_maps), warmup=1, repeats=1 if quick else 3))
        recovered = fn(mel_maps).numpy()
        consistency = np.linalg.norm(np.einsum("mf,kft->kmt", fb, recovered) - mel_maps.numpy()) / max(
            np.linalg.norm(mel_maps.numpy()), 1e-30)
        result[name] = {**metrics(estimate), "deconvolved_maps_mel_relative_error": float(consistency),
                        f"seconds_for_{n_maps}_maps": round(seconds, 3),
                        "seconds_per_640_maps": round(seconds * 640 / n_maps, 3)}
    def librosa_nnls(m: np.ndarray) -> np.ndarray:
        # Scaled to a peak of 1: on raw power levels (~1e-4) L-BFGS-B's gradient tolerance stops it at
        # once and mel_to_stft returns its starting point, the clipped pseudo-inverse.
        scale = max(float(np.abs(m).max()), 1e-30)
        return scale * librosa.feature.inverse.mel_to_stft(m / scale, sr=config.sample_rate, n_fft=config.n_fft,
                                                           power=1.0)

    subset = mel_maps.numpy()[: 1 if quick else 8]
    start = time.perf_counter()
    librosa_maps = librosa_nnls(subset)
    per_map = (time.perf_counter() - start) / len(subset)
    reference = librosa_nnls(mel)
    consistency = np.linalg.norm(np.einsum("mf,kft->kmt", fb, librosa_maps) - subset) / max(np.linalg.norm(subset),
                                                                                             1e-30)
    result["librosa_mel_to_stft"] = {**metrics(reference), "deconvolved_maps_mel_relative_error": float(consistency),
                                     "seconds_per_640_maps": round(per_map * 640, 1),
                                     "note": "scipy L-BFGS-B NNLS in NumPy (not graph-pure), inputs scaled to peak 1; "
                                             f"timed on {len(subset)} maps and extrapolated"}
    return result


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: the first and last layers x 16 features, 1 run of each, no extra warm-up")
    parser.add_argument("--profile", action="store_true", help="also time the walk's rules one by one (eager)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the batched computation")
    parser.add_argument("--default-allocator", action="store_true",
                        help="keep TensorFlow's default CPU allocator (see the module docstring)")
    args = parser.parse_args(argv)

    model = random_mtt_vgg()
    config = model.tfaural_config
    n_samples = config.segment_length  # 187 frames
    waveform = tf.constant(excerpt(config.sample_rate, n_samples)[None])
    # chunk_elements=0: every feature of a layer in one pass (the exports bound memory with chunks of
    # features instead, export/budget.py; "chunked_seconds" below times that path too).
    auraliser = auralise.MelAuraliser(model, chunk_elements=0)
    # The smoke run's first and last levels: the two walks pass every kind of layer; tracing grows with the depth.
    levels = [auraliser.net.levels[0], auraliser.net.levels[-1]] if args.quick else list(auraliser.net.levels)
    n_maps = 16 if args.quick else auraliser.net.n_features(levels[-1])
    features = tf.range(n_maps, dtype=tf.int32)
    repeats = 1 if args.quick else args.repeats
    total_features = len(levels) * n_maps

    batched = compiled(lambda y: {k: v.audio for k, v in auraliser.layers(y, layers=levels, features=features,
                                                                             mode="phase").items()})
    warmup = 0 if args.quick else 1  # the smoke run's first call only traces (and runs once)
    run_times(lambda: batched(waveform), warmup=warmup, repeats=1)
    # The ceiling and the batched run alternate, so that both see the same load on a shared machine.
    batched_times, ceilings = [], []
    for _ in range(repeats):
        ceilings.append(conv2d_gflops(repeats=1, batch=4 if args.quick else 32)["median"])
        batched_times += run_times(lambda: batched(waveform), warmup=0, repeats=1)
    batched_seconds = statistics.median(batched_times)
    ceiling = statistics.median(ceilings)
    chunked_auraliser = auralise.MelAuraliser(model)  # the exports' path: features in bounded chunks
    chunked = compiled(lambda y: {k: v.audio for k, v in chunked_auraliser.layers(
        y, layers=levels, features=features, mode="phase", keep_deconvolved=False).items()})
    run_times(lambda: chunked(waveform), warmup=warmup, repeats=1)
    chunked_seconds = statistics.median(run_times(lambda: chunked(waveform), warmup=0, repeats=repeats))

    # Profile by stage, each a compiled function of its own.
    mel_input = compiled(lambda y: auraliser.mel_input(y)[1])
    mel = mel_input(waveform)
    forward = compiled(lambda m: auraliser.net._graph.forward(
        auraliser.net._model_input(m), [auraliser.net._walk_to(auraliser.net.layer_name(levels[-1])).seed.output]))
    stage = {"mel_input": statistics.median(run_times(lambda: mel_input(waveform), warmup=warmup, repeats=repeats)),
             "forward": statistics.median(run_times(lambda: list(forward(mel).values())[-1], warmup=warmup,
                                                    repeats=repeats))}
    walks = {}
    for level in levels:
        fn = compiled(lambda m, level=level: auraliser.net(m, layer=level, features=features))
        walks[level] = statistics.median(run_times(lambda fn=fn: fn(mel), warmup=warmup, repeats=repeats))
    maps = compiled(lambda m: auraliser.net.deconvolve_layers(m, layers=levels, features=features))(mel)
    _, _, finish, _ = auraliser._prepare(waveform, "phase", False)
    rebuild = compiled(lambda d: finish(d)[0])
    stage["auralisation_all_layers"] = sum(
        statistics.median(run_times(lambda d=d: rebuild(d), warmup=warmup, repeats=repeats)) for d in maps.values())
    stage["deconvolution_per_layer"] = {str(k): round(v, 3) for k, v in walks.items()}
    deconvolution_seconds = sum(walks.values())

    flops = deconvolution_flops(model, {lv: auraliser.net.layer_name(lv) for lv in levels}, n_maps)
    gflops = flops / 1e9 / batched_seconds

    # Per-feature loops, side by side (the smoke run's on its first level only: the same code on a shallower walk).
    loop_levels = levels[:1] if args.quick else levels
    per_layer = {
        level: compiled(
            lambda y, f, level=level: auraliser(y, layer=level, features=f, mode="phase").audio,
            input_signature=[tf.TensorSpec(waveform.shape, tf.float32), tf.TensorSpec([1], tf.int32)],
        )
        for level in loop_levels
    }
    for level in loop_levels:
        per_layer[level](waveform, tf.constant([0])).numpy()
    samples_per_layer = 1 if args.quick else 4
    calls, start = 0, time.perf_counter()
    for level in loop_levels:
        for feature in np.linspace(0, n_maps - 1, samples_per_layer).astype(np.int32):
            per_layer[level](waveform, tf.constant([feature])).numpy()
            calls += 1
    compiled_per_feature = (time.perf_counter() - start) / calls
    eager_calls, start = 0, time.perf_counter()
    for level in loop_levels:
        for feature in np.linspace(0, n_maps - 1, max(1, samples_per_layer // 2)).astype(np.int32):
            auraliser(waveform, layer=level, features=[int(feature)], mode="phase").audio.numpy()
            eager_calls += 1
    eager_per_feature = (time.perf_counter() - start) / eager_calls
    speedup_eager = eager_per_feature * total_features / batched_seconds
    speedup_compiled = compiled_per_feature * total_features / batched_seconds

    dominant = max(["mel_input", "forward", "auralisation_all_layers"], key=lambda k: stage[k])
    result: dict[str, Any] = {
        "benchmark": "deconvnet_mtt_vgg",
        "model": "musicnn_tagger('vgg') with MTT_vgg pools, random weights (BN scales of both signs)",
        "excerpt_seconds": round(n_samples / config.sample_rate, 3),
        "cpu_allocator": "bfc" if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC") == "true" else "default",
        "input": [config.n_mels, config.n_frames],
        "layers": levels,
        "features_per_layer": n_maps,
        "features": total_features,
        "batched_seconds_median": round(batched_seconds, 3),
        "batched_seconds_all": [round(t, 3) for t in batched_times],
        "chunked_seconds_median": round(chunked_seconds, 3),
        "deconvolution_tflop": round(flops / 1e12, 3),
        "gflops": round(gflops, 1),
        "conv2d_ceiling_gflops": round(ceiling, 1),
        "conv2d_ceiling_gflops_all": [round(c, 1) for c in ceilings],
        "fraction_of_conv2d_ceiling": round(gflops / ceiling, 3),
        "deconvolution_only_gflops": round(flops / 1e9 / deconvolution_seconds, 1),
        "profile_seconds": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in stage.items()},
        "dominant_step": ("deconvolution" if deconvolution_seconds > stage[dominant] else dominant),
        "eager_loop_seconds_per_feature": round(eager_per_feature, 4),
        "eager_loop_seconds_extrapolated": round(eager_per_feature * total_features, 1),
        "speedup_vs_eager_loop": round(speedup_eager, 1),
        "compiled_loop_seconds_per_feature": round(compiled_per_feature, 4),
        "compiled_loop_seconds_extrapolated": round(compiled_per_feature * total_features, 1),
        "speedup_vs_compiled_loop": round(speedup_compiled, 1),
        "target_fraction": TARGET_FRACTION,
        "target_speedup": TARGET_SPEEDUP,
        "meets_fraction_target": gflops / ceiling >= TARGET_FRACTION,
        "meets_speedup_target": speedup_eager >= TARGET_SPEEDUP,
    }
    if args.profile:
        result["rule_profile"] = profile_rules(model, mel, levels, features, warmup=not args.quick)
    result["mel_inversion"] = mel_inversion_study(model, waveform.numpy()[0], quick=args.quick)
    result["environment"] = environment()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
