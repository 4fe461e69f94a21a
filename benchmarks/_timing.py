"""Timing helpers shared by the benchmarks: medians after warm-up and the machine's matmul throughput."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf

__all__ = ["compiled", "run_times", "median_seconds", "matmul_gflops", "environment"]


def compiled(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """``tf.function(fn, autograph=False)``: how the exports trace tfaural's code (it has no tensor-dependent
    Python control flow). AutoGraph would convert every library function the benchmark calls, which makes the
    tracing (and a smoke run) slower; the timed calls after the warm-up are the same either way."""
    return tf.function(fn, autograph=False, **kwargs)


def run_times(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> list[float]:
    """Wall-clock seconds of ``repeats`` runs of ``fn()`` after ``warmup`` untimed runs.

    ``fn`` should return a tensor (or anything with ``numpy()``) so that the timing
    includes the computation and not only its dispatch.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats!r} is invalid: expected a positive integer")
    for _ in range(warmup):
        _materialise(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _materialise(fn())
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> float:
    """Median of :func:`run_times`."""
    return statistics.median(run_times(fn, warmup=warmup, repeats=repeats))


def _materialise(result: Any) -> None:
    for item in tf.nest.flatten(result):
        if hasattr(item, "numpy"):
            item.numpy()


def matmul_gflops(*, n: int = 2048, warmup: int = 1, repeats: int = 5) -> tuple[float, float]:
    """Measured float32 GFLOP/s of an ``n x n`` by ``n x n`` ``tf.matmul`` (``2 n^3`` FLOPs).

    A reference for what the machine can do, against which a model's achieved
    throughput is expressed as a fraction.

    Returns:
        ``(median, best)`` GFLOP/s over the timed runs.
    """
    a = tf.random.stateless_normal([n, n], seed=[1, 2], dtype=tf.float32)
    b = tf.random.stateless_normal([n, n], seed=[3, 4], dtype=tf.float32)
    matmul = tf.function(tf.matmul)  # operands are arguments, so nothing can be constant-folded
    times = run_times(lambda: matmul(a, b), warmup=warmup, repeats=repeats)
    flops = 2.0 * n**3 / 1e9
    return flops / statistics.median(times), flops / min(times)


def environment() -> dict[str, Any]:
    """TensorFlow version, CPU kernels and thread settings, to make numbers comparable."""
    import os

    from tfaural.cpu import onednn_state

    return {
        "tensorflow": tf.__version__,
        "onednn": onednn_state(),
        "cpu_count": os.cpu_count(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }
