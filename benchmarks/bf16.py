"""bfloat16 inference on this CPU: Keras' ``mixed_bfloat16`` policy against float32, speed and scores.

Prints one JSON object. For musicnn's ``MTT_vgg`` (imported by ``tfaural.pretrained``; its
in-graph log-mel front end stays float32) and a 3^9-SampleCNN (random weights, 50 labels), a
copy of the model with every other layer under ``mixed_bfloat16`` (bfloat16 compute, float32
variables) runs on the same batch as the float32 model (``--batch`` segments of music-like
audio), each as a ``tf.function`` after a warm-up call; the figure is the best of three medians
of ``--repeats`` calls, alternating. Reported: the speed-up (float32 time / bfloat16 time), the
largest and the mean change of any score, and whether the CPU has AVX512_BF16 or AMX
(``/proc/cpuinfo``). tfaural ships a ``--precision bfloat16`` option only if it pays here:
speed-up >= 1.2 with every score within 1e-3.

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

from _jobs import machine_load

TARGET_SPEEDUP = 1.2
TARGET_MAX_DSCORE = 1e-3
#: Layers that stay float32: the input and tfaural's in-graph front ends.
FLOAT32_LAYERS = ("InputLayer", "InputScaling")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: MTT_vgg only, 4 segments, 2 calls")
    parser.add_argument("--batch", type=int, default=None, help="segments per call (default 32; quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per median (default 5; quick 2)")
    return parser.parse_args(argv)


def cpu_flags() -> list[str]:
    """The bfloat16-related flags of the CPU (AVX512_BF16, AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return sorted(f for f in line.split(":", 1)[1].split() if f == "avx512_bf16" or f.startswith("amx"))
    except OSError:
        pass
    return []


def bfloat16_copy(model: Any) -> Any:
    """The model with every layer but :data:`FLOAT32_LAYERS` under ``mixed_bfloat16``, same weights."""
    import keras

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if type(layer).__name__ not in FLOAT32_LAYERS:
            config["dtype"] = "mixed_bfloat16"
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def compare(model: Any, x: Any, *, repeats: int) -> dict[str, Any]:
    """Speed and score changes of the bfloat16 copy against the float32 model on ``x``."""
    import tensorflow as tf

    half = bfloat16_copy(model)
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
    delta = np.abs(a - b)
    return {"batch": int(x.shape[0]), "float32_seconds": round(min(full), 4), "bfloat16_seconds": round(min(halves), 4),
            "speedup": round(min(full) / min(halves), 3), "max_abs_score_change": float(delta.max()),
            "mean_abs_score_change": float(delta.mean()),
            "pays": min(full) / min(halves) >= TARGET_SPEEDUP and float(delta.max()) <= TARGET_MAX_DSCORE}


def run(*, quick: bool = False, batch: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    batch = batch or (4 if quick else 32)
    repeats = repeats or (2 if quick else 5)
    import keras
    import tensorflow as tf

    from tfaural import spectral
    from tfaural.pretrained.catalogue import import_run
    from tfaural.pretrained.probes import music_like

    root = Path(tempfile.mkdtemp(prefix="tfaural-bf16-"))
    try:
        results: dict[str, Any] = {}
        vgg, _ = import_run("musicnn/MTT_vgg", root / "vgg", verify=False)
        audio = music_like(seconds=3.0 * batch + 3, sample_rate=16000, seed=3, peak=0.5)
        segments = np.stack([audio[i * 47616 // 2: i * 47616 // 2 + 47616] for i in range(batch)])
        mel = spectral.melspectrogram(segments, sample_rate=16000, n_fft=512, hop_length=256, n_mels=96).numpy()
        results["MTT_vgg"] = compare(vgg, tf.constant(mel[..., np.newaxis]), repeats=repeats)
        if not quick:
            from tfaural.models.samplecnn import samplecnn_model

            keras.utils.set_random_seed(0)
            model = samplecnn_model(n_outputs=50, sample_rate=22050)
            length = int(model.inputs[0].shape[1])
            waves = music_like(seconds=length * batch / 22050 + 1, sample_rate=22050, seed=4, peak=0.5)
            x = np.stack([waves[i * length:(i + 1) * length] for i in range(batch)])[..., np.newaxis]
            results["samplecnn_3^9"] = compare(model, tf.constant(x), repeats=repeats)
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
