"""Matrix products that are safe on every CPU TensorFlow runs on.

TensorFlow 2.21's oneDNN batch matmul (on by default on x86 Linux) corrupts the heap when an
operand of rank 4 or more is multiplied with one of lower rank that it has to be broadcast
against (tensorflow/tensorflow#117700, fixed after 2.21 by tensorflow/tensorflow#120199):
``tf.matmul(tf.zeros([2, 1, 160, 9]), tf.zeros([1, 9, 6]))`` segfaults or aborts, at once or a
few operations later, eagerly and inside ``tf.function`` alike (seen on an Intel Xeon with
AVX-512 and AMX). :func:`matmul` broadcasts both operands' batch dimensions explicitly first
(``tf.broadcast_to``, which returns its input unchanged when the shape already fits), so that
oneDNN never sees a rank mismatch. Every batched product in the library and in the export's
graphs goes through it.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

__all__ = ["matmul"]


def matmul(a: Any, b: Any, *, transpose_a: bool = False, transpose_b: bool = False) -> tf.Tensor:
    """``tf.matmul(a, b)`` with NumPy-style batch broadcasting done explicitly.

    Args:
        a: ``[..., m, n]`` (``[..., n, m]`` with ``transpose_a``).
        b: ``[..., n, p]`` (``[..., p, n]`` with ``transpose_b``); batch dimensions broadcast with ``a``'s.

    Returns:
        ``[*broadcast batch, m, p]``, as ``tf.matmul`` defines it.
    """
    a = tf.convert_to_tensor(a)
    b = tf.convert_to_tensor(b, dtype=a.dtype)
    rank_a, rank_b = a.shape.rank, b.shape.rank
    if rank_a == rank_b == 2:
        return tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    if rank_a is not None and rank_a == rank_b and a.shape[:-2].is_fully_defined() and a.shape[:-2] == b.shape[:-2]:
        return tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    shape_a, shape_b = tf.shape(a), tf.shape(b)
    batch = tf.broadcast_dynamic_shape(shape_a[:-2], shape_b[:-2])
    a = tf.broadcast_to(a, tf.concat([batch, shape_a[-2:]], axis=0))
    b = tf.broadcast_to(b, tf.concat([batch, shape_b[-2:]], axis=0))
    return tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
