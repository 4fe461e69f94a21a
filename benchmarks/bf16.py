"""bfloat16 inference on this CPU: Keras' ``mixed_bfloat16`` policy against float32, speed and scores.

Prints one JSON object. For musicnn's ``MTT_vgg`` (imported by ``tfaural.pretrained``; its
in-graph log-mel front end stays float32) and a 3^9-SampleCNN (random weights, 50 labels), a
copy of the model with every other layer under ``mixed_bfloat16`` (bfloat16 compute, float32
variables) runs on the same batch as the float32 model (``--batch`` segments of music-like
audio), each as a ``tf.function`` after a warm-up call; the figure is the best of three medians
of ``--repeats`` calls, alternating. Reported: the speed-up (float32 time / bfloat16 time), the
largest and the mean change of any score, and whether the CPU has AVX512_BF16 or AMX
(``/proc/cpuinfo``).

For ``MTT_vgg``, also where its score changes come from (``layer_choices``): copies in which only
some of its five 3x3 convolutions compute in bfloat16 (conv2-5, conv3-5; every other layer float32,
as a bfloat16 export variant with per-layer policies could choose), with their speed-ups and largest
changes, and the spread of each BatchNormalization's moving mean over its standard deviation
(``|mean| / sqrt(variance)``). In musicnn's vgg a BatchNormalization follows each convolution's ReLU:
where that ratio is large, subtracting the mean amplifies bfloat16's rounding of the convolution's
output by as much.

Also, per model, the route a job-level ``--precision bfloat16`` would take without a new export:
the float32 export's ``serving_default`` (loaded as the jobs load it,
:func:`beam_jobs.model_process.load_signature`) with TensorFlow's Grappler rewrite
``auto_mixed_precision_onednn_bfloat16`` (oneDNN's bfloat16 graph rewrite, in-graph front end
included), against the same export without it, each in a fresh process (the rewrite is a
process-wide option), on the same one-segment waveforms, alternating (``export_graph_rewrite``).

tfaural ships a ``--precision bfloat16`` option only if it pays here: speed-up >= 1.2 with every
score within 1e-3.

Usage:
    python benchmarks/bf16.py [--quick] [--batch 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _jobs import machine_load, musicnn_export, run_command

TARGET_SPEEDUP = 1.2
TARGET_MAX_DSCORE = 1e-3
#: Layers that stay float32: the input and tfaural's in-graph front ends.
FLOAT32_LAYERS = ("InputLayer", "InputScaling")
#: MTT_vgg copies with only these convolutions in bfloat16, everything else float32 (``layer_choices``).
VGG_LAYER_CHOICES = {"conv2-5": ("conv2", "conv3", "conv4", "conv5"), "conv3-5": ("conv3", "conv4", "conv5")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: MTT_vgg only, 4 segments, 2 calls, one process per precision")
    parser.add_argument("--batch", type=int, default=None, help="segments per call (default 32; quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per median (default 5; quick 2)")
    return parser.parse_args(argv)


def cpu_flags() -> list[str]:
    """The bfloat16-related flags of the CPU (AVX512_BF16, AMX), as the jobs read them."""
    from tfaural.cpu import cpu_bfloat16_flags

    return cpu_bfloat16_flags() or []


#: Runs an export's ``serving_default`` on saved waveforms in a fresh process, with or without the
#: bfloat16 Grappler rewrite; saves the scores, prints the best of three medians of the call time.
_REWRITE_SCRIPT = """
import json, statistics, sys, time
import numpy as np
import tensorflow as tf
export_dir, precision, waves, scores_path, repeats = sys.argv[1:6]
if precision == "bfloat16":
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
from beam_jobs.model_process import load_signature
_, function = load_signature(export_dir, "serving_default")
x = tf.constant(np.load(waves))
np.save(scores_path, function(waveform=x)["scores"].numpy())
medians = []
for _ in range(3):
    times = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        function(waveform=x)["scores"].numpy()
        times.append(time.perf_counter() - start)
    medians.append(statistics.median(times))
print(json.dumps({"seconds": min(medians)}))
"""


def export_rewrite(export_dir: str, waves: np.ndarray, root: Path, *, repeats: int, rounds: int = 2) -> dict[str, Any]:
    """The export's ``serving_default`` with and without the bfloat16 Grappler rewrite (see the module docstring).

    Args:
        export_dir: A tfaural export (version directory).
        waves: float32 ``[batch, samples]``, one model segment each (so each score is one segment's).
        root: Scratch folder.
        repeats: Timed calls per median.
        rounds: Processes per precision, alternating.
    """
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "waves.npy", waves.astype(np.float32))
    seconds: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for _ in range(rounds):  # alternating processes: a drifting background load hits both alike
        for precision in seconds:
            done = run_command([sys.executable, "-c", _REWRITE_SCRIPT, export_dir, precision, str(root / "waves.npy"),
                                str(root / f"{precision}.npy"), str(repeats)])
            seconds[precision].append(json.loads(done["stdout"].strip().splitlines()[-1])["seconds"])
    return summary(int(waves.shape[0]), min(seconds["float32"]), min(seconds["bfloat16"]),
                   np.load(root / "float32.npy"), np.load(root / "bfloat16.npy"))


def summary(batch: int, full: float, half: float, full_scores: np.ndarray, half_scores: np.ndarray) -> dict[str, Any]:
    """One model's figures: the two call times (s), the speed-up, the score changes and whether it pays."""
    delta = np.abs(full_scores - half_scores)
    return {"batch": batch, "float32_seconds": round(full, 4), "bfloat16_seconds": round(half, 4),
            "speedup": round(full / half, 3), "max_abs_score_change": float(delta.max()),
            "mean_abs_score_change": float(delta.mean()),
            "pays": full / half >= TARGET_SPEEDUP and float(delta.max()) <= TARGET_MAX_DSCORE}


def bfloat16_copy(model: Any, only: tuple[str, ...] | None = None) -> Any:
    """The model with every layer but :data:`FLOAT32_LAYERS` under ``mixed_bfloat16`` (or only the layers
    named in ``only``), same weights."""
    import keras

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        chosen = layer.name in only if only is not None else type(layer).__name__ not in FLOAT32_LAYERS
        if chosen:
            config["dtype"] = "mixed_bfloat16"
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def compare(model: Any, x: Any, *, repeats: int, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Speed and score changes of the bfloat16 copy (:func:`bfloat16_copy`) against the float32 model on ``x``."""
    import tensorflow as tf

    half = bfloat16_copy(model, only)
    full_fn = tf.function(lambda t: model(t, training=False))
    half_fn = tf.function(lambda t: tf.cast(half(t, training=False), tf.float32))
    a, b = full_fn(x).numpy(), half_fn(x).numpy()  # warm-up (tracing) and the scores

    def median_seconds(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x).numpy()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    full, halves = [], []
    for _ in range(3):
        full.append(median_seconds(full_fn))
        halves.append(median_seconds(half_fn))
    return summary(int(x.shape[0]), min(full), min(halves), a, b)


def batch_norm_spread(model: Any) -> dict[str, float]:
    """The largest ``|moving mean| / sqrt(moving variance + epsilon)`` of each BatchNormalization layer, by name:
    how much subtracting its mean amplifies an error in its input relative to the input's size."""
    import keras

    spread = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, variance = np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)
            spread[layer.name] = round(float(np.max(np.abs(mean) / np.sqrt(variance + layer.epsilon))), 2)
    return spread


def run(*, quick: bool = False, batch: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    batch = batch or (4 if quick else 32)
    repeats = repeats or (2 if quick else 5)
    import keras
    import tensorflow as tf
    from beam_tag import export_samplecnn

    from tfaural import spectral
    from tfaural.pretrained.catalogue import import_run
    from tfaural.pretrained.probes import music_like

    root = Path(tempfile.mkdtemp(prefix="tfaural-bf16-"))
    try:
        results: dict[str, Any] = {}
        rewrite: dict[str, Any] = {}
        vgg, _ = import_run("musicnn/MTT_vgg", root / "vgg", verify=False)
        audio = music_like(seconds=3.0 * batch + 3, sample_rate=16000, seed=3, peak=0.5)
        segments = np.stack([audio[i * 47616 // 2: i * 47616 // 2 + 47616] for i in range(batch)])
        mel = spectral.melspectrogram(segments, sample_rate=16000, n_fft=512, hop_length=256, n_mels=96).numpy()
        x = tf.constant(mel[..., np.newaxis])
        results["MTT_vgg"] = compare(vgg, x, repeats=repeats)
        choices = {name: compare(vgg, x, repeats=repeats, only=convs) for name, convs in VGG_LAYER_CHOICES.items()}
        rewrite["MTT_vgg"] = export_rewrite(musicnn_export("MTT_vgg", root / "exports", verify=False), segments,
                                            root / "rewrite-vgg", repeats=repeats, rounds=1 if quick else 2)
        if not quick:
            from tfaural.models.samplecnn import samplecnn_model

            keras.utils.set_random_seed(0)
            model = samplecnn_model(n_outputs=50, sample_rate=22050)
            length = int(model.inputs[0].shape[1])
            waves = music_like(seconds=length * batch / 22050 + 1, sample_rate=22050, seed=4, peak=0.5)
            x = np.stack([waves[i * length:(i + 1) * length] for i in range(batch)])
            results["samplecnn_3^9"] = compare(model, tf.constant(x[..., np.newaxis]), repeats=repeats)
            rewrite["samplecnn_3^9"] = export_rewrite(export_samplecnn(str(root / "samplecnn")), x,
                                                      root / "rewrite-samplecnn", repeats=repeats)
        flags = cpu_flags()
        return {
            "benchmark": "mixed_bfloat16 vs float32 inference (Keras policy), same batch, same weights",
            "cpu_bf16_flags": flags,
            "cpu_has_avx512_bf16": "avx512_bf16" in flags,
            "models": results,
            "speedup": {name: r["speedup"] for name, r in results.items()},
            "max_abs_score_change": {name: r["max_abs_score_change"] for name, r in results.items()},
            "targets": {"speedup": TARGET_SPEEDUP, "max_abs_score_change": TARGET_MAX_DSCORE},
            "pays": all(r["pays"] for r in results.values()),
            "layer_choices": {
                "what": "MTT_vgg with only these convolutions in bfloat16 (Keras policy), every other layer float32",
                "models": choices,
                "speedup": {name: r["speedup"] for name, r in choices.items()},
                "max_abs_score_change": {name: r["max_abs_score_change"] for name, r in choices.items()},
                "pays": {name: r["pays"] for name, r in choices.items()},
                "batch_norm_mean_over_std_max": batch_norm_spread(vgg),
            },
            "export_graph_rewrite": {
                "what": "the float32 export's serving_default with and without Grappler's "
                        "auto_mixed_precision_onednn_bfloat16, each in a fresh process",
                "models": rewrite,
                "speedup": {name: r["speedup"] for name, r in rewrite.items()},
                "max_abs_score_change": {name: r["max_abs_score_change"] for name, r in rewrite.items()},
                "pays": all(r["pays"] for r in rewrite.values()),
            },
            "machine": machine_load(),
            "quick": quick,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(json.dumps(run(quick=args.quick, batch=args.batch, repeats=args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
