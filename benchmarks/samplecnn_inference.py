"""CPU inference throughput of the 3^9-SampleCNN (Lee et al. 2018, Table 1).

Prints one JSON object: for batch sizes 1, 10 and 32, the median time per batch
(after warm-up) of the tf.function-compiled forward pass ``model(x, training=False)``,
segments per second, times real time (a segment is 59,049 samples = 2.678 s at
22,050 Hz), achieved GFLOP/s (2 x the analytically counted conv/dense
multiply-accumulates per segment) and its fraction of the machine's float32
``tf.matmul`` throughput (2048 x 2048, median and best run) measured in the same run.

Usage:
    python benchmarks/samplecnn_inference.py [--quick] [--batch-sizes 1 10 32]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _timing import environment, matmul_gflops, median_seconds

from tfaural.config import SampleCNNConfig
from tfaural.models import config_from_model, count_macs
from tfaural.models.samplecnn import samplecnn_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller matmul (< 30 s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 10, 32], help="batch sizes to time")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per batch size (default 7, quick 2)")
    return parser.parse_args(argv)


def run(
    *, quick: bool = False, batch_sizes: tuple[int, ...] = (1, 10, 32), repeats: int | None = None
) -> dict[str, Any]:
    """Times the 3^9-SampleCNN and returns the JSON-serialisable results."""
    repeats = repeats or (2 if quick else 7)
    model = samplecnn_model()
    config = config_from_model(model)
    assert isinstance(config, SampleCNNConfig)
    length = config.input_length
    gflop_per_segment = 2.0 * count_macs(config) / 1e9
    infer = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, length, 1], tf.float32)]
    )
    rng = np.random.default_rng(0)
    batches: dict[str, dict[str, float]] = {}
    for batch_size in batch_sizes:
        x = tf.constant(rng.uniform(-1, 1, (batch_size, length, 1)).astype(np.float32))
        seconds = median_seconds(functools.partial(infer, x), warmup=1, repeats=repeats)
        segments_per_second = batch_size / seconds
        batches[str(batch_size)] = {
            "seconds_per_batch": seconds,
            "segments_per_second": segments_per_second,
            "x_real_time": segments_per_second * config.input_seconds,
            "gflops": segments_per_second * gflop_per_segment,
        }
    peak, best = matmul_gflops(n=2048, warmup=2, repeats=5 if quick else 15)
    for result in batches.values():
        result["fraction_of_matmul"] = result["gflops"] / peak
        result["fraction_of_best_matmul"] = result["gflops"] / best
    return {
        "model": "3^9-SampleCNN",
        "segment_samples": length,
        "segment_seconds": config.input_seconds,
        "sample_rate": config.sample_rate,
        "parameters": model.count_params(),
        "macs_per_segment": count_macs(config),
        "gflop_per_segment": gflop_per_segment,
        "timed_runs_per_batch": repeats,
        "batches": batches,
        "matmul_gflops": peak,
        "matmul_gflops_best": best,
        "matmul_size": 2048,
        "quick": quick,
        **environment(),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(json.dumps(run(quick=args.quick, batch_sizes=tuple(args.batch_sizes), repeats=args.repeats), indent=2))


if __name__ == "__main__":
    main()
