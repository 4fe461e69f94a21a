"""What this machine can do at best: the ceilings every other figure is a fraction of.

* float32 matmul GFLOP/s (a large ``tf.matmul``), the GFLOP/s of a Conv1D stack shaped
  like SampleCNN's middle layers (256 channels, kernel 3, batch 10) and of a Conv2D stack
  shaped like MTT_vgg's second layer (128 channels, 3x3, 48 x 92 maps, batch 32), through TensorFlow;
* audio decoding (FLAC, MP3, WAV via soundfile) and soxr resampling (44.1 → 22.05 kHz,
  librosa's ``soxr_hq``) in × real time per core (single-threaded work on one core).

Run ``python benchmarks/ceilings.py [--quick]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
import numpy as np
import soundfile as sf
import soxr
import tensorflow as tf
from _timing import environment, matmul_gflops, run_times


def conv1d_gflops(*, length: int = 2187, channels: int = 256, batch: int = 10, layers: int = 4,
                  repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a stack of stride-1 'same' Conv1D layers (2 FLOPs per multiply-accumulate)."""
    x = tf.random.stateless_normal([batch, length, channels], seed=[1, 2])
    kernels = [tf.random.stateless_normal([3, channels, channels], seed=[3, i]) * 0.05 for i in range(layers)]

    @tf.function
    def stack(x: tf.Tensor) -> tf.Tensor:
        for kernel in kernels:
            x = tf.nn.relu(tf.nn.conv1d(x, kernel, stride=1, padding="SAME"))
        return x

    times = run_times(lambda: stack(x), warmup=2, repeats=repeats)
    flops = 2.0 * batch * length * channels * channels * 3 * layers / 1e9
    return {"median": flops / statistics.median(times), "best": flops / min(times)}


def conv2d_gflops(*, height: int = 48, width: int = 92, channels: int = 128, batch: int = 32, layers: int = 4,
                  repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a stack of stride-1 'same' 3x3 Conv2D layers shaped like MTT_vgg's second layer."""
    x = tf.random.stateless_normal([batch, height, width, channels], seed=[1, 2])
    kernels = [tf.random.stateless_normal([3, 3, channels, channels], seed=[5, i]) * 0.03 for i in range(layers)]

    @tf.function
    def stack(x: tf.Tensor) -> tf.Tensor:
        for kernel in kernels:
            x = tf.nn.relu(tf.nn.conv2d(x, kernel, strides=1, padding="SAME"))
        return x

    times = run_times(lambda: stack(x), warmup=2, repeats=repeats)
    flops = 2.0 * batch * height * width * channels * channels * 9 * layers / 1e9
    return {"median": flops / statistics.median(times), "best": flops / min(times)}


def _encoded(fmt: str, seconds: float, sample_rate: int = 44100) -> bytes:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    subtype = {"FLAC": "PCM_16", "WAV": "PCM_16", "MP3": "MPEG_LAYER_III"}[fmt]
    sf.write(buffer, np.stack([y, y], axis=1).astype(np.float32), sample_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def decode_realtime(fmt: str, *, seconds: float, repeats: int) -> float:
    """× real time of decoding a stereo 44.1 kHz file to float32 on one core."""
    data = _encoded(fmt, seconds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sf.read(io.BytesIO(data), dtype="float32")
        times.append(time.perf_counter() - start)
    return seconds / statistics.median(times)


def resample_realtime(*, seconds: float, repeats: int) -> float:
    """× real time of soxr HQ resampling of mono 44.1 kHz audio to 22.05 kHz on one core."""
    y = np.random.default_rng(0).standard_normal(int(seconds * 44100)).astype(np.float32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        soxr.resample(y, 44100, 22050, quality="HQ")
        times.append(time.perf_counter() - start)
    return seconds / statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter inputs and fewer repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    seconds = 20.0 if args.quick else 120.0
    matmul_median, matmul_best = matmul_gflops(n=1024 if args.quick else 2048, repeats=repeats)
    conv = conv1d_gflops(repeats=repeats, length=729 if args.quick else 2187)
    conv2d = conv2d_gflops(repeats=repeats, batch=8 if args.quick else 32)
    result = {
        "benchmark": "ceilings",
        "matmul_gflops": round(matmul_median, 1),
        "matmul_gflops_best": round(matmul_best, 1),
        "conv1d_gflops": round(conv["median"], 1),
        "conv1d_gflops_best": round(conv["best"], 1),
        "conv2d_gflops": round(conv2d["median"], 1),
        "conv2d_gflops_best": round(conv2d["best"], 1),
        "decode_x_realtime_per_core": {
            fmt.lower(): round(decode_realtime(fmt, seconds=seconds, repeats=repeats), 1)
            for fmt in ("WAV", "FLAC", "MP3")
        },
        "resample_x_realtime_per_core": round(resample_realtime(seconds=seconds, repeats=repeats), 1),
        "environment": environment(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
