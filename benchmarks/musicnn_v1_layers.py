"""A stand-in for ``tf.compat.v1.layers`` so that musicnn 0.1.0's own code runs unchanged under TensorFlow 2.21.

musicnn's ``models.py`` builds its networks with ``tf.compat.v1.layers.conv2d``,
``batch_normalization``, ``max_pooling2d``, ``dense``, ``dropout`` and ``flatten``. Those
functions were Keras 2 layers; with Keras 3 (TensorFlow >= 2.16) ``tf.compat.v1.layers``
no longer provides them, so ``from musicnn.tagger import top_tags`` imports but every
call fails. This module re-creates the six functions with ``tf.compat.v1.get_variable``
under ``tf.compat.v1.variable_scope(name, default_name=...)``, which yields the TF1 layers'
variable names exactly: ``conv2d/kernel``, ``conv2d_1/kernel``, ``1CNN/bias``,
``batch_normalization_3/moving_mean``, ``dense_1/kernel`` ..., so musicnn's
``tf.compat.v1.train.Saver`` restores the shipped checkpoints. Semantics follow TF1's layers
(channels-last, ``epsilon=1e-3`` batch normalisation, ``valid`` pooling by default, Glorot
initialisers, dropout and batch statistics only when ``training`` is true, through
``tf.cond`` because musicnn feeds ``training`` as a boolean placeholder). It is a stand-in
for inference: training mode normalises with batch statistics but registers no
``UPDATE_OPS`` for the moving averages.

Nothing of musicnn is edited or copied: :func:`install` replaces the attribute
``tf.compat.v1.layers`` of the imported TensorFlow module, and musicnn's modules, imported
afterwards, look the functions up at call time.

Run as a script, it tags files the way musicnn's README shows, one ``top_tags`` call per
file, and prints one JSON object (used by ``benchmarks/peer_musicnn.py`` in a process of
its own)::

    python benchmarks/musicnn_v1_layers.py --model MTT_vgg --top-n 5 FILE [FILE ...]
    python benchmarks/musicnn_v1_layers.py --overflow-only FILE [FILE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

__all__ = ["conv2d", "batch_normalization", "max_pooling2d", "dense", "dropout", "flatten", "install", "layers"]

_v1 = tf.compat.v1


def _pair(value: Any) -> list[int]:
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value), int(value)]


def _cond(training: Any, if_true: Callable[[], Any], if_false: Callable[[], Any]) -> Any:
    """``if_true()`` when ``training`` (a Python bool or a boolean tensor) is true, else ``if_false()``."""
    if isinstance(training, bool):
        return if_true() if training else if_false()
    return tf.cond(tf.cast(training, tf.bool), if_true, if_false)


def conv2d(inputs: tf.Tensor, filters: int, kernel_size: Any, strides: Any = (1, 1), padding: str = "valid",
           data_format: str = "channels_last", dilation_rate: Any = (1, 1), activation: Any = None,
           use_bias: bool = True, kernel_initializer: Any = None, bias_initializer: Any = None,
           name: str | None = None, reuse: Any = None, **_: Any) -> tf.Tensor:
    """``tf.compat.v1.layers.conv2d`` (channels-last): variables ``<scope>/kernel`` ``[kh, kw, in, filters]``
    and ``<scope>/bias`` ``[filters]``, scope ``name`` or ``conv2d``, ``conv2d_1``, ..."""
    if data_format != "channels_last":
        raise ValueError(f"data_format={data_format!r}: this stand-in supports channels_last only")
    with _v1.variable_scope(name, default_name="conv2d", reuse=reuse):
        kernel_shape = [*_pair(kernel_size), int(inputs.shape[-1]), int(filters)]
        kernel = _v1.get_variable("kernel", kernel_shape, initializer=kernel_initializer
                                  or _v1.glorot_uniform_initializer())
        outputs = tf.nn.conv2d(inputs, kernel, strides=[1, *_pair(strides), 1], padding=padding.upper(),
                               dilations=[1, *_pair(dilation_rate), 1])
        if use_bias:
            bias = _v1.get_variable("bias", [int(filters)], initializer=bias_initializer or _v1.zeros_initializer())
            outputs = tf.nn.bias_add(outputs, bias)
        return activation(outputs) if activation is not None else outputs


def batch_normalization(inputs: tf.Tensor, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3,
                        center: bool = True, scale: bool = True, training: Any = False, trainable: bool = True,
                        name: str | None = None, reuse: Any = None, **_: Any) -> tf.Tensor:
    """``tf.compat.v1.layers.batch_normalization``: ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``
    of shape ``[channels]`` under ``batch_normalization``, ``batch_normalization_1``, ...

    With ``training`` true the batch's moments over every axis but ``axis`` are used (no
    moving-average updates are registered); otherwise the moving statistics.
    """
    rank = inputs.shape.rank
    axis = axis % rank
    channels = int(inputs.shape[axis])
    with _v1.variable_scope(name, default_name="batch_normalization", reuse=reuse):
        gamma = _v1.get_variable("gamma", [channels], initializer=_v1.ones_initializer(), trainable=trainable) \
            if scale else None
        beta = _v1.get_variable("beta", [channels], initializer=_v1.zeros_initializer(), trainable=trainable) \
            if center else None
        moving_mean = _v1.get_variable("moving_mean", [channels], initializer=_v1.zeros_initializer(),
                                       trainable=False)
        moving_variance = _v1.get_variable("moving_variance", [channels], initializer=_v1.ones_initializer(),
                                           trainable=False)
        reduce_axes = [i for i in range(rank) if i != axis]
        broadcast = [1] * rank
        broadcast[axis] = channels

        def batch_moments() -> tuple[tf.Tensor, tf.Tensor]:
            mean, variance = tf.nn.moments(inputs, axes=reduce_axes)
            return mean, variance

        mean, variance = _cond(training, batch_moments, lambda: (tf.identity(moving_mean),
                                                                 tf.identity(moving_variance)))

        def shaped(value: tf.Tensor | None) -> tf.Tensor | None:
            return None if value is None else tf.reshape(value, broadcast)

        return tf.nn.batch_normalization(inputs, shaped(mean), shaped(variance), shaped(beta), shaped(gamma),
                                         epsilon)


def max_pooling2d(inputs: tf.Tensor, pool_size: Any, strides: Any, padding: str = "valid",
                  data_format: str = "channels_last", name: str | None = None) -> tf.Tensor:
    """``tf.compat.v1.layers.max_pooling2d`` (channels-last; no variables)."""
    if data_format != "channels_last":
        raise ValueError(f"data_format={data_format!r}: this stand-in supports channels_last only")
    return tf.nn.max_pool2d(inputs, ksize=_pair(pool_size), strides=_pair(strides), padding=padding.upper(),
                            name=name)


def dense(inputs: tf.Tensor, units: int, activation: Any = None, use_bias: bool = True,
          kernel_initializer: Any = None, bias_initializer: Any = None, name: str | None = None,
          reuse: Any = None, **_: Any) -> tf.Tensor:
    """``tf.compat.v1.layers.dense``: ``<scope>/kernel`` ``[in, units]`` and ``<scope>/bias``, scope ``dense``,
    ``dense_1``, ...; applied to the last axis."""
    with _v1.variable_scope(name, default_name="dense", reuse=reuse):
        kernel = _v1.get_variable("kernel", [int(inputs.shape[-1]), int(units)],
                                  initializer=kernel_initializer or _v1.glorot_uniform_initializer())
        if inputs.shape.rank == 2:
            outputs = tf.matmul(inputs, kernel)
        else:
            outputs = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])
        if use_bias:
            bias = _v1.get_variable("bias", [int(units)], initializer=bias_initializer or _v1.zeros_initializer())
            outputs = tf.nn.bias_add(outputs, bias)
        return activation(outputs) if activation is not None else outputs


def dropout(inputs: tf.Tensor, rate: float = 0.5, noise_shape: Any = None, seed: Any = None,
            training: Any = False, name: str | None = None) -> tf.Tensor:
    """``tf.compat.v1.layers.dropout``: inverted dropout when ``training`` is true, identity otherwise."""
    return _cond(training, lambda: tf.nn.dropout(inputs, rate=rate, noise_shape=noise_shape, seed=seed),
                 lambda: tf.identity(inputs))


def flatten(inputs: tf.Tensor, name: str | None = None, data_format: str = "channels_last") -> tf.Tensor:
    """``tf.compat.v1.layers.flatten``: ``[batch, ...]`` -> ``[batch, product of the other axes]``."""
    size = 1
    for dim in inputs.shape[1:]:
        size *= int(dim)
    return tf.reshape(inputs, [-1, size], name=name)


#: The stand-in module object that :func:`install` puts in place of ``tf.compat.v1.layers``.
layers = types.SimpleNamespace(conv2d=conv2d, batch_normalization=batch_normalization, max_pooling2d=max_pooling2d,
                               dense=dense, dropout=dropout, flatten=flatten)


def install() -> None:
    """Makes ``tf.compat.v1.layers`` this stand-in (call before musicnn builds a model)."""
    tf.compat.v1.layers = layers


# --------------------------------------------------------------------------- musicnn's README loop


def tag_files(paths: Sequence[str], *, model: str, top_n: int) -> dict[str, Any]:
    """``musicnn.tagger.top_tags(path, model=model, topN=top_n)`` for every file, timed.

    Returns:
        ``{"seconds": loop wall time, "per_file_seconds": [...], "tags": {path: [...]}}``.
    """
    install()
    import contextlib
    import io

    from musicnn.tagger import top_tags

    tags: dict[str, list[str]] = {}
    per_file = []
    start = time.perf_counter()
    for path in paths:
        begin = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # top_tags and the extractor print progress
            tags[path] = list(top_tags(path, model=model, topN=top_n, print_tags=False))
        per_file.append(time.perf_counter() - begin)
    return {"seconds": time.perf_counter() - start, "per_file_seconds": per_file, "tags": tags}


def front_end_overflow(paths: Sequence[str]) -> dict[str, float]:
    """For every file, the fraction of musicnn's float16 mel bins that are infinite (its ``batch_data``)."""
    import numpy as np

    install()
    from musicnn.extractor import batch_data

    out = {}
    for path in paths:
        _, spectrogram = batch_data(path, 187, 187)
        out[path] = float(np.mean(~np.isfinite(spectrogram)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="audio files")
    parser.add_argument("--model", default="MTT_vgg", help="musicnn model name (default MTT_vgg)")
    parser.add_argument("--top-n", type=int, default=5, help="tags per file (default 5)")
    parser.add_argument("--overflow-only", action="store_true",
                        help="instead of tagging, print the share of infinite bins of musicnn's float16 front end "
                             "per file")
    args = parser.parse_args(argv)
    if args.overflow_only:
        print(json.dumps(front_end_overflow(args.files)))
        return 0
    print(json.dumps(tag_files(args.files, model=args.model, top_n=args.top_n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
