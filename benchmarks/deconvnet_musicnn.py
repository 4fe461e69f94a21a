"""Deconvolution of the musicnn architecture (MTT_musicnn / MSD_musicnn's shape): products vs convolutions.

The musicnn architecture's front end is five one-input-channel branches on the log-mel
spectrogram (96 bands × 187 frames): two timbral convolutions of 38 × 7 and 67 × 7 taps with 204
maps and three temporal ones of 1 × 128 / 64 / 32 taps with 51 maps, each max-pooled over the
whole frequency axis. Every feature's deconvolution goes back through them, and the adjoint of
such a convolution maps many channels to one (204 → 1 with 266 or 469 taps) -- a shape oneDNN
runs at a few GFLOP/s. tfaural computes it as ``[taps, channels] × [channels, positions]``
products and shifted sums in groups of kernel rows (``tfaural.deconv``,
``_single_output_convolution``; :data:`tfaural.deconv.PRODUCT_TAPS_PER_CHANNEL`).

This script times both ways side by side in one process on the same model and input: every
deconvolvable layer of a ``musicnn_tagger("musicnn")`` with random weights (the weights do not
change the work), ``--features`` features per layer (default 16) of one 3-s patch, each layer's
walk a compiled ``tf.function``; "convolution" is the rule before (products only for at most
``channels / 4`` taps, i.e. ``PRODUCT_TAPS_PER_CHANNEL = 0.25``), "products" the current one.
Reported: median seconds per layer and in all, the speed-up, and the largest difference between
the two results relative to their largest value (they compute the same sums in another order).

Run ``python benchmarks/deconvnet_musicnn.py [--quick] [--features K] [--repeats N]``; prints one
JSON object. ``--quick`` (smoke mode): a narrow model (32 mel bands, 64 timbral maps, 62 frames),
two layers, 4 features, one repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")  # as deconvnet_mtt_vgg.py (its docstring says why)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
import keras
import numpy as np
import tensorflow as tf
from _timing import compiled as graph_function
from _timing import environment
from deconvnet_mtt_vgg import random_musicnn_tagger

from tfaural import deconv

#: The rule before products were used for large kernels: at most channels / 4 taps.
CONVOLUTION_RULE = 0.25
QUICK_ARCHITECTURE: dict[str, Any] = {"n_mels": 32, "n_frames": 62, "frontend_scale": 0.5, "midend_filters": 16,
                                      "backend_units": 32}


def random_musicnn(seed: int = 0, **architecture: Any) -> keras.Model:
    """The musicnn architecture (default MTT_musicnn's shape) with random weights and batch-norm statistics."""
    keras.utils.set_random_seed(seed)
    return random_musicnn_tagger(seed, architecture="musicnn", **architecture)


def one_channel_adjoints(model: keras.Model) -> dict[str, dict[str, Any]]:
    """The front end's convolutions whose adjoints map many channels to one: taps, channels, which way."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and int(layer.kernel.shape[-2]) == 1:
            kernel = deconv._adjoint_kernel(layer, 2)
            taps = int(np.prod(kernel.shape[:2]))
            found[layer.name] = {"taps": taps, "channels": int(kernel.shape[-2]),
                                 "products": deconv._product_taps(kernel)}
    return found


def compiled(model: keras.Model, layer: Any, features: list[int], rule: float) -> Callable[[tf.Tensor], Any]:
    """A new DeconvNet's walk of ``layer`` as a ``tf.function``, traced now under
    ``PRODUCT_TAPS_PER_CHANNEL = rule`` (a DeconvNet traces each layer's walk once, so one per rule)."""
    net = deconv.DeconvNet(model)
    fn = graph_function(lambda x: net(x, layer=layer, features=features))
    saved = deconv.PRODUCT_TAPS_PER_CHANNEL
    deconv.PRODUCT_TAPS_PER_CHANNEL = rule  # read while tracing
    try:
        fn.get_concrete_function(tf.TensorSpec([1, *net.model.inputs[0].shape[1:]], tf.float32))
    finally:
        deconv.PRODUCT_TAPS_PER_CHANNEL = saved
    return fn


def run(*, quick: bool = False, n_features: int = 16, repeats: int = 3) -> dict[str, Any]:
    architecture = QUICK_ARCHITECTURE if quick else {}
    model = random_musicnn(**architecture)
    net = deconv.DeconvNet(model)
    shape = [1, *model.inputs[0].shape[1:]]
    rng = np.random.default_rng(1)
    mel = tf.constant((rng.standard_normal(shape) ** 2 * 1e-2).astype(np.float32))  # a mel power patch
    levels = list(net.levels)
    if quick:  # the first mid-end layer and the deepest (a front-end pool's walk starts one-channel anyway)
        levels = [next(level for level in levels if "midend" in net.layer_name(level)), levels[-1]]
    layers: dict[str, Any] = {}
    totals = {"convolution": 0.0, "products": 0.0}
    for level in levels:
        name = net.layer_name(level)
        features = list(range(min(n_features, net.n_features(level))))
        fns = {"convolution": compiled(model, level, features, CONVOLUTION_RULE),
               "products": compiled(model, level, features, deconv.PRODUCT_TAPS_PER_CHANNEL)}
        outs = {way: fn(mel).numpy() for way, fn in fns.items()}  # warm-up
        times: dict[str, list[float]] = {way: [] for way in fns}
        for _ in range(repeats):  # side by side, alternating
            for way, fn in fns.items():
                start = time.perf_counter()
                fn(mel).numpy()
                times[way].append(time.perf_counter() - start)
        medians = {way: statistics.median(t) for way, t in times.items()}
        for way in totals:
            totals[way] += medians[way]
        scale = max(float(np.abs(outs["convolution"]).max()), 1e-30)
        layers[name] = {
            "features": len(features),
            "convolution_seconds": round(medians["convolution"], 3),
            "products_seconds": round(medians["products"], 3),
            "speedup": round(medians["convolution"] / medians["products"], 2),
            "max_relative_difference": float(np.abs(outs["products"] - outs["convolution"]).max() / scale),
        }
        print(f"[deconvnet_musicnn] {name}: {layers[name]}", file=sys.stderr, flush=True)
    return {
        "benchmark": "deconvolution of the musicnn architecture: one-channel adjoints as products vs convolutions",
        "model": ("musicnn architecture, random weights, " +
                  (json.dumps(architecture) if quick else "MTT_musicnn's shape (96 x 187 log-mel, 204 timbral "
                                                          "and 51 temporal maps, 64 mid-end maps)")),
        "input_shape": shape,
        "one_channel_adjoints": one_channel_adjoints(model),
        "product_taps_per_channel": deconv.PRODUCT_TAPS_PER_CHANNEL,
        "convolution_rule": CONVOLUTION_RULE,
        "repeats": repeats,
        "layers": layers,
        "convolution_seconds": round(totals["convolution"], 3),
        "products_seconds": round(totals["products"], 3),
        "speedup": round(totals["convolution"] / totals["products"], 2),
        "max_relative_difference": max(layer["max_relative_difference"] for layer in layers.values()),
        "quick": quick,
        **environment(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke mode: a narrow model, two layers, 4 features")
    parser.add_argument("--features", type=int, default=None, help="features per layer (default 16; quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each way (default 3; quick 1)")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, n_features=args.features or (4 if args.quick else 16),
                 repeats=args.repeats or (1 if args.quick else 3))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
