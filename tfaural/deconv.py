"""Zeiler–Fergus deconvolution of learnt features of any Keras functional CNN, batched over features.

The deconvnet (Zeiler & Fergus 2014, as used by Choi et al. 2015) is a modified
backward pass. For a chosen layer and a list of its feature maps (channels),
:class:`DeconvNet`

1. runs the model forward from its input to that layer (inference mode: batch
   normalisation uses its moving statistics, dropout is off);
2. **seeds** each selected feature with its own forward values: the map of that
   channel, all other channels zero;
3. walks the Keras graph back in reverse topological order, applying one
   backward rule per layer, down to the **input domain** (see below).

The backward rules:

================================  ===========================================================
ReLU (a ``ReLU``/``Activation``   ``method="deconvnet"``: ReLU of the signal coming back;
layer or ``activation="relu"``    ``"guided"`` (guided backpropagation): that, and zero where the
inside a conv / dense layer)      forward activation was not positive; ``"gradient"`` (plain
                                  gradient, saliency): zero where the forward activation was not
                                  positive (the ordinary derivative)
other rectifiers (ELU, SELU,      ``deconvnet``: ReLU of the signal, as for the ReLU they
GELU, swish/SiLU, mish, softplus, smooth, bound or let leak; ``guided``: that times the
leaky/parametric/bounded ReLU;    derivative at the forward input; ``gradient``: the signal times
:data:`RECTIFIERS`; as layers or  the derivative (taken by ``tf.GradientTape`` of the activation
inside a conv / dense layer)      itself, in the walk's graph)
other elementwise activations     every method: the signal times the derivative (the rules
(sigmoid, tanh, ...:              differ only at rectifiers, as Captum's ``Deconvolution`` and
:data:`ELEMENTWISE`)              ``GuidedBackprop`` differ from the gradient only at ReLUs)
``MaxPooling1D/2D``               unpooling through the **switches**: each value goes back to
                                  the position of its window's (first) maximum; windows may
                                  overlap (any size, stride, ``valid``/``same`` padding), their
                                  contributions are summed
``AveragePooling1D/2D``           the adjoint (each value spread evenly over its window)
``Conv1D``/``Conv2D``             the transposed convolution (any kernel shape, stride, dilation
                                  and ``valid``/``same``/``causal`` padding; no bias)
``DepthwiseConv*``,               the adjoint of the layer's linear part (no bias), as its
``SeparableConv*``, grouped       gradient (``tf.GradientTape``): MobileNet-style blocks (YAMNet),
convolutions, ``Conv*Transpose``  grouped and transposed convolutions
``BatchNormalization``            multiplication by its per-channel inference scale
                                  ``γ / √(σ² + ε)`` (sign included; the shift is dropped, like
                                  the biases: the deconvnet propagates patterns, not offsets),
                                  wherever it sits
``Dense``                         the transposed weight matrix
``GlobalMax/AveragePooling1D/2D`` back to the argmax position / spread evenly
``Concatenate``, ``Add``,         split along the axis; the same signal to every operand (and
``Subtract``, ``Average``         summed where paths meet again); negated; divided by n
``Reshape``, ``Flatten``,         reshaped back; inverse permutation; cropped; zero-padded
``Permute``, ``ZeroPadding*``,
``Cropping*``
``Dropout`` & co., ``Identity``   identity (inference)
================================  ===========================================================

Any other layer (layer normalisation, the product of a squeeze-and-excitation gate,
upsampling, a ``Lambda``, ...) and any other activation (softmax, a function of the
user's own) is walked by its exact vector-Jacobian product at its forward input
(``tf.GradientTape``), in every method: the three methods differ only at rectifiers,
as Captum's ``Deconvolution`` and ``GuidedBackprop`` differ from the gradient only at
ReLUs (so a rectifier hidden inside such a layer is walked by its derivative). A
functional model called as a layer (a ``keras.applications`` backbone on spectrograms)
is inlined: its layers are walked, and named, as if built into the model. A nested
model of another kind (subclassed, or with several inputs or outputs) and a
``channels_first`` layer raise :class:`~tfaural.errors.ModelError` naming them. A
mixed-precision model (float16 compute, float32 weights) is walked back in float32 from
its float16 values. A layer's own non-rectifying
activation (a sigmoid output, a softmax) is skipped on the seeded layer itself, which
is then seeded with its pre-activation values (the logits); a rectifier there is walked
as below it.

**Features are a batch axis.** All ``k`` selected features of a layer go back down
in one pass: every backward op runs on ``batch × k`` signals at once (the switches
and ReLU masks of the one forward pass are shared by the ``k`` signals of an
input). Until the first convolution on the way down each signal still has a single
non-zero channel, so that part runs on ``[batch, ..., k]`` tensors and the first
transposed convolution uses only each feature's slice of the kernel (``n_maps`` times
fewer operations than a full one on one-hot maps). Below it, unpooled signals stay at
the pooled resolution through batch normalisation and ReLU, and a last convolution
with one output channel (the spectrogram's) is fused with the unpooling (with the
switches folded into its weights once per forward pass, when they are small beside a
chunk: one product per pooled position). What depends on the forward pass only (the
switches and what is made of them) is computed once, outside the chunks. A convolution
back to one channel (a front end on the spectrogram: the Choi CNN's first layer, musicnn's
timbral and temporal branches) runs as matrix products and shifted sums rather than as
oneDNN's convolution, which computes that shape at a few GFLOP/s (5.8x faster for
the musicnn architecture's deconvolution; ``benchmarks/deconvnet_musicnn.py``). Everything is
core TensorFlow (no ``py_function``) and works with unknown batch and time sizes,
so exported signatures can call it.

**Memory is bounded by chunks of features**: the walk holds a few tensors of
``batch × k ×`` (the largest activation of the model per input), so the features
go down in consecutive chunks of at most ``chunk_elements`` elements of that size
(:func:`map_feature_chunks`, an in-graph loop; one chunk for typical requests),
and a caller can turn each chunk's maps into its final, smaller result inside the
loop (``per_chunk``, e.g. auralisation). Repeated feature indices are rejected.

**Layers.** ``layer`` is a Python int *level* or a layer name (any layer of the
model). Levels are conv blocks: for tfaural's own models those of
:func:`tfaural.models.conv_blocks` (Choi: 1-5; SampleCNN: 0 = the strided front
conv, 1..N the modules, N + 1 the 1x1 conv), seeded at the block's output (after its
pooling). For any other model, levels ``1..N`` number its ``Conv1D``/``Conv2D`` and
``SeparableConv1D``/``2D`` layers in topological order (a depthwise convolution is half
of a block; a convolution on 1 x 1 maps, such as a squeeze-and-excitation gate's, is
none), each seeded at the end of the chain of batch normalisation, rectifier
(ReLU, ELU, ...) and pooling layers that follows it (stopping before a non-rectifying
activation, dropout, a reshape, a concatenation or multiplication, a layer whose output
is used twice, or the next conv), e.g. ``pool3`` in ``conv3 → bn3 → pool3``. A residual
``Add`` continues the chain (through a dropout before it too, as in EfficientNet's blocks), so a
residual block is heard at its output (after the sum and what follows it, ``relu`` in
``conv → bn → add → relu``), and its last conv and its shortcut's conv are one level.
Layers no convolution marks (a transformer block's residual sum, an attention layer) are
levels too when named: ``extra_levels=`` numbers them ``N + 1``, ... after the ``N`` conv
levels (``--extra-levels`` of ``tfaural.listen`` and of the import), and every layer between
them and the input is walked by its rule or its exact vector-Jacobian product.

**Input domain.** The walk ends at the model's input, or at the output of the
*input layer* named by ``input_layer=``, or, by default, at the output of the
front-end layers that sit on the model's input before anything else: instances
of :class:`~tfaural.models.layers.InputScaling`,
:class:`~tfaural.models.layers.LogMelSpectrogram`,
:class:`~tfaural.models.layers.Standardise`, ``keras.layers.MelSpectrogram`` and
``keras.layers.STFTSpectrogram``, or of any layer class with a true
``deconv_front_end`` attribute. So the Choi CNN deconvolves to its scaled STFT
magnitude (see :mod:`tfaural.auralise` for the way back to linear magnitude), the
SampleCNN family to the waveform (padding added by a ``ZeroPadding1D`` is cropped
on the way), the mel-frame baseline to its standardised log-mel spectrogram, a
log-mel model whose compression layer is named as ``input_layer`` to that log-mel
spectrogram, and a model with Keras's own spectrogram layer to the spectrogram it makes.

Output shapes (``k`` = number of features): ``[batch, k, freq, frames]`` for a
``[batch, freq, frames, 1]`` domain (2D CNNs), ``[batch, k, samples]`` for a
``[batch, samples, 1]`` waveform, ``[batch, k, channels, steps]`` for another
``[batch, steps, channels]`` domain (the mel-frame model: ``[batch, k, mels,
frames]``), and ``[batch, k, *domain_shape]`` otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import keras
import numpy as np
import tensorflow as tf

from tfaural import linalg
from tfaural.errors import ModelError, ParameterError
from tfaural.models.layers import InputScaling, LogMelSpectrogram, Standardise

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "ELEMENTWISE",
    "METHODS",
    "RECTIFIERS",
    "DeconvNet",
    "deconvolve",
    "walk_expansion",
    "features_per_chunk",
    "map_feature_chunks",
    "deconvolvable_layers",
    "n_features",
    "feature_maxima",
    "pool_with_switches",
    "unpool",
]

#: The backward rules at ReLUs (and other activations) that :class:`DeconvNet` offers.
METHODS = ("deconvnet", "guided", "gradient")

#: Layer classes that form a model's input front end: the walk stops after them by default.
#: Front ends the walk ends at by default: tfaural's own and Keras's spectrogram layers (whose output, the
#: spectrogram the CNN sees, is what a deconvolution is heard or looked at in).
FRONT_END_TYPES: tuple[type, ...] = (InputScaling, LogMelSpectrogram, Standardise, keras.layers.MelSpectrogram,
                                     keras.layers.STFTSpectrogram)

_IDENTITY_TYPES: tuple[type, ...] = (
    keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D, keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout, keras.layers.Identity,
    keras.layers.ActivityRegularization,
)
_CONV_TYPES: tuple[type, ...] = (keras.layers.Conv1D, keras.layers.Conv2D)
_DEPTHWISE_TYPES: tuple[type[Any], ...] = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE_TYPES: tuple[type[Any], ...] = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_TRANSPOSED_TYPES: tuple[type[Any], ...] = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose)
# Layers that start a conv block (a level, see the module docstring): a depthwise convolution is half of one.
_BLOCK_TYPES: tuple[type, ...] = _CONV_TYPES + _SEPARABLE_TYPES
_MAX_POOL_TYPES: tuple[type, ...] = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D)
_AVERAGE_POOL_TYPES: tuple[type, ...] = (keras.layers.AveragePooling1D, keras.layers.AveragePooling2D)
_GLOBAL_MAX_TYPES: tuple[type, ...] = (keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D)
_GLOBAL_AVERAGE_TYPES: tuple[type, ...] = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D)
_PADDING_TYPES: tuple[type, ...] = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D)
_CROPPING_TYPES: tuple[type, ...] = (keras.layers.Cropping1D, keras.layers.Cropping2D)


# ---------------------------------------------------------------------------------------------
# Max pooling with switches


def _dims(x: tf.Tensor) -> list[Any]:
    """``x``'s sizes: a Python int where the traced shape knows it, else an int32 scalar tensor.

    All the unknown ones come from one ``Shape`` and one ``Unpack`` op, not a ``StridedSlice`` (and its
    three constants) each: the walks read sizes at every pooling and convolution, and an export traces
    them for every layer (its tracing time and graph size grow with their op count).
    """
    static = x.shape.as_list()
    if all(size is not None for size in static):
        return static
    dynamic = tf.unstack(tf.shape(x), num=len(static))
    return [size if size is not None else tensor for size, tensor in zip(static, dynamic)]


def _at_least_zero(size: Any) -> Any:
    """``max(size, 0)``: a Python int for an int (known while tracing), else an int32 scalar tensor."""
    return max(size, 0) if isinstance(size, (int, np.integer)) else tf.maximum(size, 0)


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * rank
    return tuple(int(v) for v in value)


def _pool_geometry(
    spatial: Sequence[Any], pool_size: Sequence[int], strides: Sequence[int], padding: str
) -> tuple[list[Any], list[Any], list[Any]]:
    """Pooled sizes, padding before and after per spatial axis (TensorFlow's conventions)."""
    pooled, before, after = [], [], []
    for size, p, s in zip(spatial, pool_size, strides):
        if padding == "same":
            n = (size + s - 1) // s
            total = _at_least_zero((n - 1) * s + p - size)
            pooled.append(n)
            before.append(total // 2)
            after.append(total - total // 2)
        else:
            pooled.append(_at_least_zero((size - p) // s + 1))
            before.append(0)
            after.append(0)
    return pooled, before, after


def _windows(x: tf.Tensor, pool_size: Sequence[int], strides: Sequence[int], padding: str,
             pad_value: float) -> list[tf.Tensor]:
    """``x`` ``[batch, *spatial, c]`` at offset ``o`` of every pooling window, one tensor per offset
    (row-major order), each ``[batch, *pooled, c]``; ``"same"`` padding filled with ``pad_value``."""
    rank = len(pool_size)
    shape = _dims(x)
    pooled, before, after = _pool_geometry(shape[1 : 1 + rank], pool_size, strides, padding)
    if padding == "same":
        x = tf.pad(x, [[0, 0], *[[before[i], after[i]] for i in range(rank)], [0, 0]], constant_values=pad_value)
    span = [_at_least_zero((pooled[i] - 1) * strides[i] + 1) for i in range(rank)]  # one window's reach
    return [x[(slice(None), *[slice(offset[i], offset[i] + span[i], strides[i]) for i in range(rank)], slice(None))]
            for offset in np.ndindex(*pool_size)]


def pool_with_switches(
    x: tf.Tensor,
    pool_size: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "valid",
) -> tuple[tf.Tensor, tf.Tensor]:
    """Max pooling that also returns its switches (the argmax of every window).

    Args:
        x: float ``[batch, *spatial, channels]`` with 1 or 2 spatial axes.
        pool_size: Window size per spatial axis.
        strides: Step per spatial axis (``None``: ``pool_size``, non-overlapping windows).
        padding: ``"valid"`` (windows inside ``x``) or ``"same"`` (``ceil(size / stride)``
            windows, ``x`` padded with ``-inf`` as TensorFlow does).

    Returns:
        ``(pooled, switches)``: ``pooled`` equals ``keras.layers.MaxPooling*D`` with the
        same arguments; ``switches`` is int32 ``[batch, *pooled_spatial, channels]``: the
        position of each window's first maximum as a row-major index into the window
        (``0 .. prod(pool_size) - 1``).
    """
    strides = tuple(pool_size) if strides is None else tuple(strides)
    if tuple(strides) == tuple(pool_size) and padding == "valid":
        return _tiled_pool_with_switches(x, pool_size)
    windows = _windows(x, pool_size, strides, padding, float("-inf"))
    best, switches = windows[0], tf.zeros(tf.shape(windows[0]), tf.int32)
    for index, window in enumerate(windows[1:], start=1):
        larger = window > best  # strict: the first maximum of a window wins ties
        best = tf.where(larger, window, best)
        switches = tf.where(larger, index, switches)
    return best, switches


def _tiled_pool_with_switches(x: tf.Tensor, pool_size: Sequence[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`pool_with_switches` for windows that tile the input: one reshape and one argmax
    (also for windows as large as a whole axis, e.g. pooling over all frequencies)."""
    rank = len(pool_size)
    shape = _dims(x)
    batch, channels = shape[0], shape[-1]
    pooled = [shape[1 + i] // pool_size[i] for i in range(rank)]
    whole = all(isinstance(shape[1 + i], int) and shape[1 + i] == pooled[i] * pool_size[i] for i in range(rank))
    covered = x if whole else x[(slice(None), *[slice(0, pooled[i] * pool_size[i]) for i in range(rank)],
                                 slice(None))]
    split: list[Any] = [batch]
    for i in range(rank):
        split += [pooled[i], pool_size[i]]
    windows = tf.reshape(covered, tf.stack([*split, channels]))  # [batch, P1, p1, (P2, p2,) c]
    windows = tf.transpose(windows, [0, *[1 + 2 * i for i in range(rank)], 2 * rank + 1,
                                     *[2 + 2 * i for i in range(rank)]])
    flat = tf.reshape(windows, tf.stack([batch, *pooled, channels, int(np.prod(pool_size))]))
    return tf.reduce_max(flat, axis=-1), tf.argmax(flat, axis=-1, output_type=tf.int32)  # argmax: the first maximum


def _at_switches(x: tf.Tensor, switches: tf.Tensor, pool_size: Sequence[int], strides: Sequence[int],
                 padding: str) -> tf.Tensor:
    """The values of ``x`` (shaped like the pooling's input) at the switches: ``[batch, *pooled, c]``."""
    windows = _windows(x, pool_size, strides, padding, 0.0)
    picked = windows[0]
    for index, window in enumerate(windows[1:], start=1):
        picked = tf.where(tf.equal(switches, index), window, picked)
    return picked


def _crop_to_input(full: tf.Tensor, before: Sequence[Any], spatial: Sequence[Any], lead: int) -> tf.Tensor:
    """``full`` covers the padded input from position 0: zero-pad it on the right if short, crop the padding."""
    rank = len(spatial)
    shape = _dims(full)
    missing = [_at_least_zero(before[i] + spatial[i] - shape[lead + i]) for i in range(rank)]
    if any(not isinstance(m, (int, np.integer)) or m for m in missing):
        full = tf.pad(full, [*[[0, 0]] * lead, *[[0, m] for m in missing], [0, 0]])
    return full[(*[slice(None)] * lead, *[slice(before[i], before[i] + spatial[i]) for i in range(rank)],
                 slice(None))]


def _scatter(values: Sequence[tf.Tensor], pool_size: Sequence[int], strides: Sequence[int], padding: str,
             spatial: Sequence[Any], lead: int) -> tf.Tensor:
    """Places ``values[o]`` (``[*lead, *pooled, c]``) at offset ``o`` of every window; sums where windows overlap.

    Returns:
        ``[*lead, *spatial, c]``.
    """
    rank = len(pool_size)
    _, before, _ = _pool_geometry(spatial, pool_size, strides, padding)
    extra = [-(-p // s) - 1 for p, s in zip(pool_size, strides)]  # further pooled steps one window spans
    # Offset o = q * stride + r lands on the stride grid of residue r, q steps further on.
    buckets: dict[tuple[int, ...], tf.Tensor] = {}
    for value, offset in zip(values, np.ndindex(*pool_size)):
        quotient = [o // s for o, s in zip(offset, strides)]
        residue = tuple(o % s for o, s in zip(offset, strides))
        if any(extra):
            value = tf.pad(value, [*[[0, 0]] * lead, *[[q, e - q] for q, e in zip(quotient, extra)], [0, 0]])
        buckets[residue] = value if residue not in buckets else buckets[residue] + value
    zeros = tf.zeros_like(next(iter(buckets.values())))
    grid: list[tf.Tensor] = [buckets.get(residue, zeros) for residue in np.ndindex(*strides)]
    # Interleave the residue grids axis by axis, last axis first: [.., M, s, ..] -> [.., M * s, ..].
    for axis in reversed(range(rank)):
        n, position = strides[axis], lead + axis
        merged = []
        for start in range(0, len(grid), n):
            stacked = tf.stack(grid[start : start + n], axis=position + 1)
            shape = tf.shape(stacked)
            merged.append(tf.reshape(stacked, tf.concat([shape[:position], [shape[position] * n],
                                                         shape[position + 2 :]], axis=0)))
        grid = merged
    return _crop_to_input(grid[0], before, spatial, lead)


def unpool(
    y: tf.Tensor,
    switches: tf.Tensor,
    pool_size: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "valid",
    *,
    input_shape: Sequence[Any] | tf.Tensor,
    scale: tf.Tensor | None = None,
) -> tf.Tensor:
    """The adjoint of max pooling through recorded switches (overlapping windows summed).

    Args:
        y: ``[batch, n, *pooled_spatial, channels]``: signals to unpool, ``n`` per input.
        switches: int32 ``[batch, *pooled_spatial, channels]`` from :func:`pool_with_switches`.
        pool_size: Window size per spatial axis.
        strides: Step per spatial axis (``None``: ``pool_size``).
        padding: ``"valid"`` or ``"same"``, as in the forward pooling.
        input_shape: Spatial sizes of the pooling's input: an int32 tensor, or a sequence of ints and int32
            scalars (:func:`_dims`).
        scale: Optional per-channel factors ``[channels]`` applied on the way (free: they
            scale the switch masks, which are shared by the ``n`` signals).

    Returns:
        ``[batch, n, *input_shape, channels]``: each value placed at its window's switch,
        zeros elsewhere, values of overlapping windows that share a switch summed.
    """
    rank = len(pool_size)
    strides = tuple(pool_size) if strides is None else tuple(strides)
    spatial = [input_shape[i] for i in range(rank)]
    n_windows = int(np.prod(pool_size))
    if tuple(strides) != tuple(pool_size):
        masks = [tf.cast(tf.equal(switches, index), y.dtype) for index in range(n_windows)]
        if scale is not None:
            masks = [mask * scale for mask in masks]
        return _scatter([y * mask[:, tf.newaxis] for mask in masks], pool_size, strides, padding, spatial, lead=2)
    # Non-overlapping windows: nearest-neighbour upsampling times the (scaled) 0/1 switch mask.
    shape = _dims(y)
    batch, n, channels = shape[0], shape[1], shape[-1]
    pooled = [shape[2 + i] for i in range(rank)]
    onehot = tf.one_hot(switches, n_windows, dtype=y.dtype)  # [batch, *pooled, c, window]
    if scale is not None:
        onehot = onehot * scale[:, tf.newaxis]
    onehot = tf.reshape(onehot, tf.concat([tf.shape(switches), list(pool_size)], axis=0))
    order = [0]
    for i in range(rank):
        order += [1 + i, rank + 2 + i]
    mask = tf.transpose(onehot, [*order, rank + 1])  # [batch, P1, p1, (P2, p2,) c]
    if rank == 1:
        up = tf.reshape(y, tf.stack([batch, n, pooled[0], 1, channels])) * mask[:, tf.newaxis]
    else:
        # Upsample along the last axis first, then one broadcasting product with the mask: TensorFlow
        # broadcasts at most five groups of axes, [batch, n, P1, p1, rest] here.
        up = tf.reshape(y, tf.stack([batch, n, *pooled, 1, channels]))
        up = tf.broadcast_to(up, tf.stack([batch, n, *pooled, pool_size[-1], channels]))
        up = tf.reshape(up, tf.stack([batch, n, pooled[0], 1, -1]))
        up = up * tf.reshape(mask, tf.stack([batch, 1, pooled[0], pool_size[0], -1]))
    covered = [pooled[i] * pool_size[i] for i in range(rank)]
    up = tf.reshape(up, tf.stack([batch, n, *covered, channels]))
    _, before, _ = _pool_geometry(spatial, pool_size, strides, padding)
    return _crop_to_input(up, before, spatial, lead=2)


# ---------------------------------------------------------------------------------------------
# Cotangents: the signals coming back


@dataclasses.dataclass(frozen=True)
class _Sparse:
    """A signal with one non-zero channel per feature: ``value`` ``[batch, *spatial, k]``, channel
    ``features[k]`` of ``channels`` (the layer's width) for feature ``k``."""

    value: tf.Tensor
    channels: int


@dataclasses.dataclass(frozen=True)
class _Dense:
    """A signal per (input, feature): ``value`` ``[batch * k, *shape]`` (input-major)."""

    value: tf.Tensor


@dataclasses.dataclass(frozen=True)
class _Unpooled:
    """A dense signal at a max-pooling's input, kept at the pooled resolution until an op needs it whole.

    Channelwise rules (ReLU, batch normalisation, dropout) commute with unpooling, which only
    moves values and inserts zeros: they run on the ``prod(stride)`` times smaller pooled map.
    Batch normalisation does not even touch the values: its scale waits in ``scale`` until the
    next non-linear rule, and is folded into the switch masks (or the next convolution's
    weights) otherwise. Where windows overlap, several pooled values may share a switch and are
    summed at that position; before a non-linear rule they are merged (:func:`_settle`).
    ``value`` is ``[batch * k, *pooled, channels]``; ``switches`` ``[batch, *pooled, channels]``.
    """

    value: tf.Tensor
    switches: tf.Tensor
    pool_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str
    spatial: Sequence[Any]  # the pooling input's spatial sizes (ints where known while tracing, else int32 scalars)
    scale: tf.Tensor | None = None  # pending per-channel factors [channels]
    merged: bool = False  # values of overlapping windows that share a switch already summed into one
    merge: tuple[tf.Tensor, ...] = ()  # overlapping windows: _merge_masks of the switches, if made already
    folded: tuple[tf.Tensor, ...] = ()  # (_folded_weights,) for the one-output-channel convolution below, or ()

    @property
    def overlapping(self) -> bool:
        return any(p > s for p, s in zip(self.pool_size, self.strides))


_Cot = _Sparse | _Dense | _Unpooled


class _Switches(NamedTuple):
    """A max pooling's switches, recorded once per forward pass (:meth:`DeconvNet._record_switches`)."""

    indices: tf.Tensor  # int32 [batch, *pooled, channels] (pool_with_switches)
    merge: tuple[tf.Tensor, ...]  # overlapping windows: _merge_masks(indices, ...); otherwise ()
    folded: tuple[tf.Tensor, ...]  # (_folded_weights(...),) of the one-channel convolution below; or ()


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every backward rule of one walk shares."""

    batch: tf.Tensor
    k: tf.Tensor
    features: tf.Tensor
    method: str
    switches: Mapping[int, _Switches]  # forward tensor id -> switches of the max pooling on it

    def split(self, value: tf.Tensor) -> tf.Tensor:
        """``[batch * k, ...]`` -> ``[batch, k, ...]``."""
        return tf.reshape(value, tf.stack([self.batch, self.k, *_dims(value)[1:]]))

    def merge(self, value: tf.Tensor) -> tf.Tensor:
        """``[batch, k, ...]`` -> ``[batch * k, ...]``."""
        return tf.reshape(value, tf.stack([self.batch * self.k, *_dims(value)[2:]]))

    def dense(self, cot: _Cot) -> tf.Tensor:
        """The ``[batch * k, *shape]`` form of a signal."""
        if isinstance(cot, _Dense):
            return cot.value
        if isinstance(cot, _Unpooled):
            rank = len(cot.pool_size)
            spatial = [cot.spatial[i] for i in range(rank)]
            return self.merge(unpool(self.split(cot.value), cot.switches, cot.pool_size, cot.strides, cot.padding,
                                     input_shape=spatial, scale=cot.scale))
        rank = len(cot.value.shape)
        moved = tf.transpose(cot.value, [0, rank - 1, *range(1, rank - 1)])  # [batch, k, *spatial]
        onehot = tf.reshape(tf.one_hot(self.features, cot.channels, dtype=cot.value.dtype),
                            tf.stack([1, self.k, *[1] * (rank - 2), cot.channels]))
        return self.merge(moved[..., tf.newaxis] * onehot)

    def times_forward(self, cot: _Cot, state: tf.Tensor) -> _Cot:
        """Multiplies each signal by its input's forward ``state`` (``[batch, *shape]``)."""
        if isinstance(cot, _Sparse):
            return _Sparse(cot.value * tf.gather(state, self.features, axis=-1), cot.channels)
        if isinstance(cot, _Unpooled):
            picked = _at_switches(state, cot.switches, cot.pool_size, cot.strides, cot.padding)
            return dataclasses.replace(cot, value=self.merge(self.split(cot.value) * picked[:, tf.newaxis]))
        return _Dense(self.merge(self.split(cot.value) * state[:, tf.newaxis]))


def _shift(x: tf.Tensor, shift: Sequence[int], first_axis: int, fill: float | int = 0) -> tf.Tensor:
    """``out[p] = x[p + shift]`` along the spatial axes starting at ``first_axis`` (``fill`` outside)."""
    for axis, d in enumerate(shift, start=first_axis):
        if d == 0:
            continue
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(d, None) if d > 0 else slice(0, _at_least_zero(_dims(x)[axis] + d))
        paddings = [[0, 0]] * len(x.shape)
        paddings[axis] = [0, d] if d > 0 else [-d, 0]
        x = tf.pad(x[tuple(index)], paddings, constant_values=fill)
    return x


def _later_shifts(pool_size: Sequence[int], strides: Sequence[int]) -> list[tuple[int, ...]]:
    """The pooled-grid shifts to the later windows (row-major) that may share a switch with a window.

    Windows that can share an input position lie at most ``ceil(size / stride) - 1`` pooled steps
    apart on each axis; "later" are the shifts after ``(0, ..., 0)`` in row-major order (the earlier
    ones are their negatives).
    """
    reach = [-(-p // s) - 1 for p, s in zip(pool_size, strides)]
    shifts = [tuple(int(d) - r for d, r in zip(index, reach)) for index in np.ndindex(*[2 * r + 1 for r in reach])]
    return [shift for shift in shifts if shift > (0,) * len(shift)]


def _merge_masks(switches: tf.Tensor, pool_size: Sequence[int], strides: Sequence[int]) -> tuple[tf.Tensor, ...]:
    """What merging an overlapping pooling's unpooled values needs of its switches (see :func:`_settle`).

    It depends on the switches only, so the walks make it once per forward pass
    (:meth:`DeconvNet._record_switches`), not once per chunk of features.

    Args:
        switches: int32 ``[batch, *pooled, channels]`` from :func:`pool_with_switches`.
        pool_size: The pooling's window (overlapping: larger than ``strides`` on some axis).
        strides: The pooling's strides.

    Returns:
        bool ``[batch, *pooled, channels]`` each: first whether the window owns its switch (no earlier
        window shares it), then per shift of :func:`_later_shifts` whether that later window shares it.
    """
    rank = len(pool_size)
    offsets = np.array(list(np.ndindex(*pool_size)), np.int32)  # [window, rank]
    pooled = _dims(switches)[1 : 1 + rank]
    targets = []  # per axis: the switch's position in the (padded) input, [batch, *pooled, channels]
    for axis in range(rank):
        grid = tf.range(pooled[axis]) * strides[axis]
        grid = tf.reshape(grid, [1, *[-1 if i == axis else 1 for i in range(rank)], 1])
        targets.append(tf.gather(tf.constant(offsets[:, axis]), switches) + grid)

    def shared(shift: Sequence[int]) -> tf.Tensor:
        return tf.reduce_all(tf.stack([tf.equal(_shift(t, shift, 1, fill=-1), t) for t in targets]), axis=0)

    later = _later_shifts(pool_size, strides)
    owner = tf.ones_like(switches, dtype=tf.bool)
    for shift in later:  # an earlier window sharing the switch holds the total
        owner = tf.logical_and(owner, tf.logical_not(shared(tuple(-d for d in shift))))
    return (owner, *[shared(shift) for shift in later])


def _settle(cot: _Unpooled, ctx: _Context) -> _Unpooled:
    """Makes an unpooled signal's values final, ready for a non-linear rule: the pending scale
    applied and, where windows overlap, the values that share a switch summed into one.

    Unpooling adds such values at their common position, and the deconvnet's ReLU must see that
    sum, not the parts. The first window sharing a position (in row-major order) takes the total
    of itself and the later ones (a shifted copy of the pooled map per later neighbour that may
    share it, :func:`_later_shifts`), the others are zeroed; which windows share a switch
    (:func:`_merge_masks`, made once per forward pass and carried in ``cot.merge``) and the scale
    are factors per input, shared by the ``k`` signals.
    """
    if not cot.overlapping or cot.merged:
        if cot.scale is None:
            return cot
        return dataclasses.replace(cot, value=cot.value * cot.scale, scale=None)
    rank = len(cot.pool_size)
    owner, *shared = cot.merge or _merge_masks(cot.switches, cot.pool_size, cot.strides)
    signals = ctx.split(cot.value)  # [batch, k, *pooled, channels]
    total = signals
    for shift, same in zip(_later_shifts(cot.pool_size, cot.strides), shared):
        # Wrapped-around values of the roll sit where ``same`` is false (the neighbour is outside).
        later = tf.roll(signals, shift=[-d for d in shift], axis=list(range(2, 2 + rank)))
        total = total + later * tf.cast(same, signals.dtype)[:, tf.newaxis]
    factor = tf.cast(owner, signals.dtype)
    if cot.scale is not None:
        factor = factor * cot.scale
    merged = total * factor[:, tf.newaxis]
    return dataclasses.replace(cot, value=ctx.merge(merged), scale=None, merged=True)


def _map(cot: _Cot, fn: Callable[[tf.Tensor], tf.Tensor]) -> _Cot:
    """Applies ``fn`` to the values; for an unpooled signal ``fn`` must be elementwise with ``fn(0) = 0``."""
    if isinstance(cot, _Sparse):
        return _Sparse(fn(cot.value), cot.channels)
    if isinstance(cot, _Unpooled):
        return dataclasses.replace(cot, value=fn(cot.value))
    return _Dense(fn(cot.value))


def _add(a: _Cot, b: _Cot, ctx: _Context) -> _Cot:
    if isinstance(a, _Sparse) and isinstance(b, _Sparse):
        return _Sparse(a.value + b.value, a.channels)
    return _Dense(ctx.dense(a) + ctx.dense(b))


# ---------------------------------------------------------------------------------------------
# Backward rules


@dataclasses.dataclass(frozen=True)
class _Step:
    """One call of a layer in the model's graph."""

    index: int
    layer: Any
    inputs: tuple[int, ...]  # ids of the Keras tensors it reads
    output: int  # id of the Keras tensor it writes
    node: Any


#: (step, forward inputs, forward output, signal at the output, context, seeded here) -> signals at the inputs
_Rule = Callable[[_Step, list[tf.Tensor], tf.Tensor, _Cot, _Context, bool], list[_Cot | None]]


def _activation_kind(fn: Any) -> str:
    name = getattr(fn, "__name__", "")
    if fn is None or fn is keras.activations.linear or name == "linear":
        return "linear"
    if fn is keras.activations.relu or name == "relu":
        return "relu"
    return name or type(fn).__name__


#: Activations that rectify (ReLU and its leaky, bounded and smooth variants), by function name: the deconvnet
#: rectifies the signal coming back through them as through a ReLU.
RECTIFIERS = frozenset({
    "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "swish", "hard_silu", "hard_swish", "mish",
    "softplus", "sparse_plus", "squareplus", "relu with max_value/negative_slope/threshold", "prelu",
})
#: Other elementwise activations: every method multiplies the signal by their derivative.
ELEMENTWISE = frozenset({
    "sigmoid", "hard_sigmoid", "sparse_sigmoid", "tanh", "hard_tanh", "softsign", "exponential", "log_sigmoid",
    "tanh_shrink", "soft_shrink", "hard_shrink",
})
_ACTIVATION_LAYERS: tuple[type[Any], ...] = (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU,
                                             keras.layers.ELU, keras.layers.PReLU)


def _layer_activation(layer: Any) -> str:
    """``"linear"``, ``"relu"`` or the name of another activation applied by ``layer``."""
    if isinstance(layer, keras.layers.ReLU):
        plain = layer.max_value is None and float(layer.negative_slope) == 0 and float(layer.threshold) == 0
        return "relu" if plain else "relu with max_value/negative_slope/threshold"
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu"
    if isinstance(layer, keras.layers.ELU):
        return "elu"
    if isinstance(layer, keras.layers.PReLU):
        return "prelu"
    return _activation_kind(getattr(layer, "activation", None))


def _activation_at(step: _Step, xs: list[tf.Tensor]) -> tuple[Callable[[tf.Tensor], tf.Tensor], tf.Tensor]:
    """``(activation, its forward input)`` of ``step``: an activation layer itself at its input, or a conv or
    dense layer's own activation at its pre-activation."""
    layer: Any = step.layer
    if isinstance(layer, _ACTIVATION_LAYERS):
        return functools.partial(layer, training=False), xs[0]
    return layer.activation, _pre_activation(step, xs[0])


def _derivative(step: _Step, xs: list[tf.Tensor]) -> tf.Tensor:
    """The elementwise derivative of ``step``'s activation at its forward input (``[batch, ...]``)."""
    fn, z = _activation_at(step, xs)
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = fn(z)
    return tf.stop_gradient(tape.gradient(out, z))


def _relu_backward(cot: _Cot, forward: tf.Tensor, ctx: _Context) -> _Cot:
    """The ReLU rule of ``ctx.method``; ``forward`` is the ReLU's forward output ``[batch, ...]``."""
    return _rectifier_backward(cot, lambda: tf.cast(forward > 0, forward.dtype), ctx)


def _rectifier_backward(cot: _Cot, derivative: Callable[[], tf.Tensor], ctx: _Context) -> _Cot:
    """A rectifier's rule: ``deconvnet`` ReLU of the signal; ``guided`` that, times the ``derivative()``;
    ``gradient`` the signal times the derivative."""
    if isinstance(cot, _Unpooled) and ctx.method != "gradient":
        cot = _settle(cot, ctx)
    if ctx.method == "deconvnet":
        return _map(cot, tf.nn.relu)
    if ctx.method == "guided":
        cot = _map(cot, tf.nn.relu)
    return ctx.times_forward(cot, derivative())


def _activation_backward(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                         seeded: bool) -> _Cot:
    kind = _layer_activation(step.layer)
    if kind == "relu":
        return _relu_backward(cot, y, ctx)
    if kind in RECTIFIERS:
        return _rectifier_backward(cot, lambda: _derivative(step, xs), ctx)
    if kind == "linear" or seeded:  # the seeded layer's own non-rectifying activation: seeded with its input
        return cot
    if kind in ELEMENTWISE:  # not a rectifier: every method takes its derivative
        return ctx.times_forward(cot, _derivative(step, xs))
    fn, z = _activation_at(step, xs)  # softmax, or a function of the user's: its vector-Jacobian product
    return _Dense(_vjp(fn, [z], ctx.dense(cot), ctx)[0])


def _vjp(fn: Callable[..., Any], inputs: Sequence[tf.Tensor], g: tf.Tensor, ctx: _Context) -> list[tf.Tensor | None]:
    """The vector-Jacobian products of ``fn`` at ``inputs`` (each ``[batch, ...]``) with ``g`` (``[batch * k,
    ...]``, input-major): the signals at ``fn``'s inputs, each input repeated for its ``k`` features."""
    tiled = [tf.repeat(x, ctx.k, axis=0) for x in inputs]
    with tf.GradientTape() as tape:
        for x in tiled:
            tape.watch(x)
        out = fn(*tiled)
    return list(tape.gradient(out, tiled, output_gradients=tf.cast(g, out.dtype),  # float16 layers: their dtype
                              unconnected_gradients=tf.UnconnectedGradients.ZERO))


def _identity_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                   seeded: bool) -> list[_Cot | None]:
    return [cot]


def _activation_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                     seeded: bool) -> list[_Cot | None]:
    return [_activation_backward(step, xs, y, cot, ctx, seeded)]


def _gradient_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                   seeded: bool) -> list[_Cot | None]:
    """Any other layer (layer normalisation, a product such as a squeeze-and-excitation gate, upsampling, a
    ``Lambda``, ...): its vector-Jacobian product at the forward inputs, in every method (the methods differ
    only at rectifiers; a rectifier inside such a layer is walked by its derivative)."""
    first = {t: i for i, t in reversed(list(enumerate(step.inputs)))}  # an input passed twice gets it once

    def call(*tiled: tf.Tensor) -> Any:
        args, kwargs = step.node.arguments.fill_in(dict(zip(first, tiled)))
        if isinstance(step.layer, keras.layers.Layer):
            kwargs = {**kwargs, "training": False}
        return step.layer(*args, **kwargs)

    grads = _vjp(call, [xs[i] for i in first.values()], ctx.dense(cot), ctx)
    by_tensor = dict(zip(first, grads))
    return [_Dense(by_tensor[t]) if i == first[t] and by_tensor[t] is not None else None
            for i, t in enumerate(step.inputs)]


def _batch_norm_scale(layer: Any) -> tf.Tensor:
    scale = tf.math.rsqrt(tf.convert_to_tensor(layer.moving_variance) + layer.epsilon)
    if layer.scale:
        scale = scale * tf.convert_to_tensor(layer.gamma)
    return scale


def _batch_norm_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                     seeded: bool) -> list[_Cot | None]:
    layer = step.layer
    rank = len(y.shape)
    axis = layer.axis % rank
    scale = _batch_norm_scale(layer)
    if isinstance(cot, _Sparse) and axis == rank - 1:
        return [_Sparse(cot.value * tf.gather(scale, ctx.features), cot.channels)]
    if isinstance(cot, _Unpooled) and axis == rank - 1:
        return [dataclasses.replace(cot, scale=scale if cot.scale is None else cot.scale * scale)]
    shape = [1] * rank
    shape[axis] = -1
    return [_Dense(ctx.dense(cot) * tf.reshape(scale, shape))]


def _adjoint_pads(layer: Any, rank: int) -> list[list[int]]:
    """Padding of the stride-1 adjoint: ``kernel - 1 - forward padding`` on each side."""
    pads = []
    for k in _tuple(layer.kernel_size, rank):
        if layer.padding == "same":
            before = (k - 1) // 2
            pads.append([k - 1 - before, k - 1 - (k - 1 - before)])
        elif layer.padding == "causal":
            pads.append([0, k - 1])
        else:
            pads.append([k - 1, k - 1])
    return pads


def _adjoint_kernel(layer: Any, rank: int) -> tf.Tensor:
    """``[*kernel, out, in]``: a stride-1 convolution's adjoint is the correlation with this kernel."""
    kernel = tf.reverse(tf.convert_to_tensor(layer.kernel), axis=list(range(rank)))
    return tf.transpose(kernel, [*range(rank), rank + 1, rank])


def _few_taps(kernel: tf.Tensor) -> bool:
    """Whether ``kernel`` ``[*taps, c_in, c_out]`` has one output channel and at most ``c_in / 4`` taps
    (the first layer of a 2D CNN on a spectrogram): its product with all taps at once is small."""
    return int(kernel.shape[-1]) == 1 and 4 * int(np.prod(kernel.shape[:-2])) <= int(kernel.shape[-2])


#: Most taps per input channel for which a one-output-channel correlation goes as products and
#: shifted sums (:func:`_single_output_convolution`) rather than oneDNN's convolution. Both do the
#: same multiply-adds; the products write ``taps`` maps per input position, so they pay while that
#: is not much more than the ``channels`` maps they read. On a 2-core AMD EPYC (AVX2), 16 features of
#: each mid-end layer of the musicnn architecture, whose walks go back through all five front-end
#: branches (204 maps with 38 x 7 and 67 x 7 taps, 51 maps with 1 x 128/64/32):
#: 8.2-8.5 -> 1.0-1.1 s (``benchmarks/deconvnet_musicnn.py``).
PRODUCT_TAPS_PER_CHANNEL = 3


def _product_taps(kernel: tf.Tensor) -> bool:
    """Whether a correlation with ``kernel`` ``[*taps, c_in, c_out]`` goes as products and shifted sums:
    one output channel and at most :data:`PRODUCT_TAPS_PER_CHANNEL` taps per input channel (oneDNN
    runs such many-to-one convolutions far below its rate: a few GFLOP/s)."""
    taps = int(np.prod(kernel.shape[:-2]))
    return int(kernel.shape[-1]) == 1 and taps <= PRODUCT_TAPS_PER_CHANNEL * int(kernel.shape[-2])


def _correlate(y: tf.Tensor, kernel: tf.Tensor, pads: list[list[int]]) -> tf.Tensor:
    """Stride-1 cross-correlation of ``y`` ``[n, *spatial, c]`` with explicit zero padding."""
    rank = len(pads)
    if _product_taps(kernel):
        return _single_output_convolution(y, kernel, [[0, 0], *pads, [0, 0]])
    if rank == 1:
        y, kernel, pads = y[:, tf.newaxis], kernel[tf.newaxis], [[0, 0], *pads]
    padding: Any = [[0, 0], *pads, [0, 0]]
    if all(p == [0, 0] for p in pads):
        padding = "VALID"
    elif all(before == after and 2 * before + 1 == k for (before, after), k in zip(pads, kernel.shape)):
        padding = "SAME"
    out = tf.nn.conv2d(y, kernel, strides=1, padding=padding)
    return out[:, 0] if rank == 1 else out


#: Kernels of at most this many taps have their signal's columns gathered one window per tap in
#: :func:`_one_channel_adjoint`; larger ones (musicnn's front end: up to 67 x 7 taps) are framed along
#: each axis instead, a few ops for any kernel (a window per tap is an op per tap in every walk's graph).
FEW_COLUMN_TAPS = 16


def _one_channel_adjoint(value: tf.Tensor, kernel: tf.Tensor, pads: list[list[int]], ctx: _Context) -> tf.Tensor:
    """The stride-1 adjoint of a convolution for one-channel signals ``[batch, *spatial, k]``.

    Each feature's signal has a single non-zero channel, so its transposed convolution needs only
    that channel's slice of the kernel (``n_maps`` times fewer operations than a full one on
    one-hot maps): with the signal's taps gathered as columns (``[positions, taps]``, small), one
    product per feature with its ``[taps, channels_in]`` slice writes the result once, already
    laid out ``[batch * k, *spatial, channels_in]`` (a depthwise convolution with the features
    as channels would need a transpose of its ``k * channels_in``-channel output). Back to a
    one-channel 2-D input with a small kernel (the paper's CNN's first layer seeded), that
    transpose is small and the depthwise convolution is used (part of the gain in
    ``benchmarks/deconvolution.py``, see :func:`_unpooled_single_output_correlation`).

    Returns:
        ``[batch * k, *spatial_in, channels_in]``.
    """
    rank = len(pads)
    size = [int(n) for n in kernel.shape[:rank]]
    channels_in = int(kernel.shape[-1])
    taps = tf.reshape(kernel, [-1, int(kernel.shape[-2]), channels_in])  # [taps, channels_out, channels_in]
    weights = tf.transpose(tf.gather(taps, ctx.features, axis=1), [1, 0, 2])  # [k, taps, channels_in]
    y = tf.pad(value, [[0, 0], *pads, [0, 0]])
    shape = _dims(y)
    out = [shape[1 + i] - size[i] + 1 for i in range(rank)]
    n_taps = int(np.prod(size))
    if rank == 2 and channels_in == 1 and n_taps <= FEW_COLUMN_TAPS:
        # Back to a one-channel input (a first layer seeded directly): a depthwise convolution with the
        # features as channels writes [batch, *spatial_in, k], and its transpose is as small. (With more
        # input channels that transpose is a pass over the whole output: the products below are faster.)
        filters = tf.reshape(tf.transpose(weights, [1, 0, 2]), [*size, -1, 1])  # [*kernel, k, 1]
        result = tf.nn.depthwise_conv2d(y, filters, [1, 1, 1, 1], "VALID")  # [batch, *spatial_in, k]
        return tf.reshape(tf.transpose(result, [0, 3, 1, 2]), tf.concat([[ctx.batch * ctx.k], out, [1]], axis=0))
    if n_taps <= FEW_COLUMN_TAPS:  # one window per tap (one window size for all: two ops a tap)
        window = tf.stack([-1, *out, -1])
        columns = tf.stack([tf.slice(y, [0, *o, 0], window) for o in np.ndindex(*size)],
                           axis=-1)  # [batch, *spatial_in, k, taps]
        columns = tf.transpose(columns, [0, rank + 1, *range(1, rank + 1), rank + 2])  # [batch, k, *spatial_in, taps]
    else:  # framed along each axis: [batch, out_1, size_1(, out_2, size_2), k], a few ops for any kernel
        for i in range(rank):
            y = tf.signal.frame(y, size[i], 1, axis=1 + 2 * i)
        columns = tf.transpose(y, [0, 2 * rank + 1, *range(1, 2 * rank, 2), *range(2, 2 * rank + 1, 2)])
    flat = tf.reshape(columns, tf.stack([ctx.batch, ctx.k, -1, n_taps]))
    result = linalg.matmul(flat, weights)  # [batch, k, positions, channels_in]
    return tf.reshape(result, tf.concat([[ctx.batch * ctx.k], out, [channels_in]], axis=0))


def _conv_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
               seeded: bool) -> list[_Cot | None]:
    layer = step.layer
    rank = len(layer.kernel.shape) - 2
    cot = _activation_backward(step, xs, y, cot, ctx, seeded)
    strides, dilations = _tuple(layer.strides, rank), _tuple(layer.dilation_rate, rank)
    if _plain_steps(layer, rank):
        pads = _adjoint_pads(layer, rank)
        kernel = _adjoint_kernel(layer, rank)
        if isinstance(cot, _Sparse):
            return [_Dense(_one_channel_adjoint(cot.value, kernel, pads, ctx))]
        if isinstance(cot, _Unpooled) and _few_taps(kernel):
            if not cot.folded:  # no weights folded for it (DeconvNet._record_switches)
                return [_Dense(_unpooled_single_output_correlation(cot, kernel, pads, ctx))]

            def folded() -> tf.Tensor:
                return _folded_single_output_correlation(cot, kernel, pads, ctx)

            def unfolded() -> tf.Tensor:
                return _unpooled_single_output_correlation(cot, kernel, pads, ctx)

            made = tf.get_static_value(tf.size(cot.folded[0]))  # empty: the weights would not have fitted
            if made is not None:
                return [_Dense(folded() if made > 0 else unfolded())]
            return [_Dense(tf.cond(tf.size(cot.folded[0]) > 0, folded, unfolded))]
        return [_Dense(_correlate(ctx.dense(cot), kernel, pads))]
    x_shape = tf.shape(xs[0])
    g = ctx.dense(cot)
    out_shape = tf.concat([[ctx.batch * ctx.k], x_shape[1:]], axis=0)
    kernel = tf.convert_to_tensor(layer.kernel)
    if layer.padding == "causal":  # the forward pads (kernel - 1) x dilation on the left, then a valid convolution
        crop = (int(layer.kernel.shape[0]) - 1) * dilations[0]
        out_shape = out_shape + tf.constant([0, crop, 0])
        return [_Dense(tf.nn.conv_transpose(g, kernel, out_shape, strides=list(strides), padding="VALID",
                                            dilations=list(dilations))[:, crop:])]
    return [_Dense(tf.nn.conv_transpose(g, kernel, out_shape, strides=list(strides), padding=layer.padding.upper(),
                                        dilations=list(dilations)))]


def _linear_part(layer: Any, x: tf.Tensor) -> tf.Tensor:
    """A convolution layer's output on ``x`` without its bias and activation (Keras's own op for its kind)."""
    if isinstance(layer, _DEPTHWISE_TYPES):
        return keras.ops.depthwise_conv(x, layer.kernel, strides=layer.strides, padding=layer.padding,
                                        dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    if isinstance(layer, _SEPARABLE_TYPES):
        return keras.ops.separable_conv(x, layer.depthwise_kernel, layer.pointwise_kernel, strides=layer.strides,
                                        padding=layer.padding, dilation_rate=layer.dilation_rate,
                                        data_format=layer.data_format)
    if isinstance(layer, _TRANSPOSED_TYPES):
        return keras.ops.conv_transpose(x, layer.kernel, strides=list(layer.strides), padding=layer.padding,
                                        output_padding=layer.output_padding, dilation_rate=layer.dilation_rate,
                                        data_format=layer.data_format)
    if layer.padding == "causal":  # Keras pads (kernel - 1) x dilation on the left, then convolves "valid"
        left = (int(layer.kernel.shape[0]) - 1) * _tuple(layer.dilation_rate, 1)[0]
        return keras.ops.conv(tf.pad(x, [[0, 0], [left, 0], [0, 0]]), layer.kernel, strides=list(layer.strides),
                              padding="valid", dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    return layer.convolution_op(x, layer.kernel)


def _autodiff_conv_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                        seeded: bool) -> list[_Cot | None]:
    """Depthwise, separable, grouped and transposed convolutions: the adjoint of the linear part is its
    vector-Jacobian product (the same at any point; in a graph, the forward convolution, whose value nothing
    reads, is pruned)."""
    cot = _activation_backward(step, xs, y, cot, ctx, seeded)
    return [_Dense(_vjp(functools.partial(_linear_part, step.layer), xs[:1], ctx.dense(cot), ctx)[0])]


def _plain_steps(layer: Any, rank: int) -> bool:
    """Whether a convolution has unit strides and no dilation (its adjoint goes by :func:`_adjoint_kernel`)."""
    return _tuple(layer.strides, rank) == (1,) * rank and _tuple(layer.dilation_rate, rank) == (1,) * rank


def _dense_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                seeded: bool) -> list[_Cot | None]:
    cot = _activation_backward(step, xs, y, cot, ctx, seeded)
    kernel = tf.convert_to_tensor(step.layer.kernel)  # [in, units]
    if isinstance(cot, _Sparse) and len(cot.value.shape) == 2:  # [batch, k]: one unit per feature
        rows = tf.gather(kernel, ctx.features, axis=1)  # [in, k]
        return [_Dense(ctx.merge(cot.value[:, :, tf.newaxis] * tf.transpose(rows)[tf.newaxis]))]
    return [_Dense(linalg.matmul(ctx.dense(cot), kernel, transpose_b=True))]


def _pool_args(layer: Any, rank: int) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    pool_size = _tuple(layer.pool_size, rank)
    strides = pool_size if layer.strides is None else _tuple(layer.strides, rank)
    return pool_size, strides, layer.padding


def _max_pool_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                   seeded: bool) -> list[_Cot | None]:
    x = xs[0]
    rank = len(x.shape) - 2
    pool_size, strides, padding = _pool_args(step.layer, rank)
    switches = ctx.switches[step.inputs[0]]  # DeconvNet._record_switches, before the walk
    spatial = _dims(x)[1 : 1 + rank]
    if isinstance(cot, _Sparse):
        out = unpool(cot.value[:, tf.newaxis], tf.gather(switches.indices, ctx.features, axis=-1), pool_size,
                     strides, padding, input_shape=spatial)
        return [_Sparse(out[:, 0], cot.channels)]
    return [_Unpooled(ctx.dense(cot), switches.indices, pool_size, strides, padding, spatial, merge=switches.merge,
                      folded=switches.folded)]


def _average_pool_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                       seeded: bool) -> list[_Cot | None]:
    x = xs[0]
    rank = len(x.shape) - 2
    pool_size, strides, padding = _pool_args(step.layer, rank)

    def adjoint(g: tf.Tensor, channels: Any) -> tf.Tensor:
        n = tf.shape(g)[0]
        spatial = tf.shape(x)[1 : 1 + rank]
        if rank == 1:
            g = g[:, tf.newaxis]
            spatial = tf.concat([[1], spatial], axis=0)
        shape = tf.concat([[n], spatial, [channels]], axis=0)
        window = [1, *((1,) if rank == 1 else ()), *pool_size, 1]
        step_ = [1, *((1,) if rank == 1 else ()), *strides, 1]
        out = tf.raw_ops.AvgPoolGrad(orig_input_shape=shape, grad=g, ksize=window, strides=step_,
                                     padding=padding.upper())
        return out[:, 0] if rank == 1 else out

    if isinstance(cot, _Sparse):
        return [_Sparse(adjoint(cot.value, ctx.k), cot.channels)]
    return [_Dense(adjoint(cot.value, tf.shape(x)[-1]))]


def _global_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                 seeded: bool) -> list[_Cot | None]:
    x = xs[0]
    shape = tf.shape(x)
    positions = tf.reduce_prod(shape[1:-1])
    flat = tf.reshape(x, tf.stack([shape[0], positions, shape[-1]]))  # [batch, positions, channels]
    if isinstance(step.layer, _GLOBAL_MAX_TYPES):
        weights = tf.one_hot(tf.argmax(flat, axis=1, output_type=tf.int32), positions, axis=1, dtype=x.dtype)
    else:
        weights = tf.ones_like(flat) / tf.cast(positions, x.dtype)
    if isinstance(cot, _Sparse):
        g = tf.reshape(cot.value, tf.stack([ctx.batch, 1, ctx.k]))
        out = g * tf.gather(weights, ctx.features, axis=-1)  # [batch, positions, k]
        return [_Sparse(tf.reshape(out, tf.concat([shape[:-1], [ctx.k]], axis=0)), cot.channels)]
    g = tf.reshape(cot.value, tf.stack([ctx.batch, ctx.k, 1, shape[-1]]))
    out = g * weights[:, tf.newaxis]  # [batch, k, positions, channels]
    return [_Dense(tf.reshape(out, tf.concat([[ctx.batch * ctx.k], shape[1:]], axis=0)))]


def _concatenate_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                      seeded: bool) -> list[_Cot | None]:
    axis = step.layer.axis % len(y.shape)
    sizes = tf.stack([tf.shape(x)[axis] for x in xs])
    return [_Dense(part) for part in tf.split(ctx.dense(cot), sizes, axis=axis, num=len(xs))]


def _add_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
              seeded: bool) -> list[_Cot | None]:
    return [cot] * len(xs)


def _subtract_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                   seeded: bool) -> list[_Cot | None]:
    return [cot, _map(cot, tf.negative)]


def _average_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                  seeded: bool) -> list[_Cot | None]:
    return [_map(cot, lambda v: v / len(xs))] * len(xs)


def _reshape_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                  seeded: bool) -> list[_Cot | None]:
    shape = tf.concat([[ctx.batch * ctx.k], tf.shape(xs[0])[1:]], axis=0)
    return [_Dense(tf.reshape(ctx.dense(cot), shape))]


def _permute_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                  seeded: bool) -> list[_Cot | None]:
    forward = [0, *(int(d) for d in step.layer.dims)]
    return [_Dense(tf.transpose(ctx.dense(cot), np.argsort(forward).tolist()))]


def _spatial_margins(layer: Any, rank: int, attribute: str) -> list[tuple[int, int]]:
    value = getattr(layer, attribute)
    if rank == 1:
        return [_tuple(value, 2)]  # type: ignore[list-item]
    return [_tuple(v, 2) for v in value]  # type: ignore[misc]


def _padding_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                  seeded: bool) -> list[_Cot | None]:
    rank = len(y.shape) - 2
    margins = _spatial_margins(step.layer, rank, "padding")
    sizes = tf.shape(xs[0])[1 : 1 + rank]

    def crop(v: tf.Tensor) -> tf.Tensor:
        return v[(slice(None), *[slice(m[0], m[0] + sizes[i]) for i, m in enumerate(margins)], slice(None))]

    return [_map(cot, crop)]


def _cropping_rule(step: _Step, xs: list[tf.Tensor], y: tf.Tensor, cot: _Cot, ctx: _Context,
                   seeded: bool) -> list[_Cot | None]:
    rank = len(y.shape) - 2
    margins = _spatial_margins(step.layer, rank, "cropping")
    return [_map(cot, lambda v: tf.pad(v, [[0, 0], *[list(m) for m in margins], [0, 0]]))]


#: Rules that take an unpooled signal at the pooled resolution (see :class:`_Unpooled`).
_LAZY_RULES: tuple[_Rule, ...] = (_identity_rule, _activation_rule, _batch_norm_rule, _conv_rule, _add_rule,
                                  _subtract_rule, _average_rule)


def _rule(layer: Any) -> _Rule | str:
    """The backward rule of ``layer``, or why it has none."""
    if isinstance(layer, keras.Model):
        return "a nested model that is not functional with one input and one output (flatten it)"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first data format (only channels_last is supported)"
    if isinstance(layer, _IDENTITY_TYPES):
        return _identity_rule
    if isinstance(layer, _ACTIVATION_LAYERS):
        return _activation_rule
    if isinstance(layer, keras.layers.BatchNormalization):
        return _batch_norm_rule
    if isinstance(layer, _CONV_TYPES):
        return _conv_rule if getattr(layer, "groups", 1) == 1 else _autodiff_conv_rule
    if isinstance(layer, _DEPTHWISE_TYPES + _SEPARABLE_TYPES + _TRANSPOSED_TYPES):
        return _autodiff_conv_rule
    if isinstance(layer, keras.layers.Dense):
        return _dense_rule
    if isinstance(layer, _MAX_POOL_TYPES):
        return _max_pool_rule
    if isinstance(layer, _AVERAGE_POOL_TYPES):
        return _average_pool_rule
    if isinstance(layer, _GLOBAL_MAX_TYPES + _GLOBAL_AVERAGE_TYPES):
        return _global_rule
    if isinstance(layer, keras.layers.Concatenate):
        return _concatenate_rule
    if isinstance(layer, keras.layers.Add):
        return _add_rule
    if isinstance(layer, keras.layers.Subtract):
        return _subtract_rule
    if isinstance(layer, keras.layers.Average):
        return _average_rule
    if isinstance(layer, (keras.layers.Reshape, keras.layers.Flatten)):
        return _reshape_rule
    if isinstance(layer, keras.layers.Permute):
        return _permute_rule
    if isinstance(layer, _PADDING_TYPES):
        return _padding_rule
    if isinstance(layer, _CROPPING_TYPES):
        return _cropping_rule
    return _gradient_rule


# ---------------------------------------------------------------------------------------------
# The model's graph


def _nested_functional(layer: Any) -> Any:
    """The functional graph of a single-input, single-output model called as a layer, or ``None``."""
    if not isinstance(layer, keras.Model):
        return None
    functional = layer if hasattr(layer, "_nodes_by_depth") else getattr(layer, "_functional", None)
    if functional is None or len(functional.inputs) != 1 or len(functional.outputs) != 1:
        return None
    return functional


class _Join:
    """The node of an identity step from ``source`` to ``target`` (Keras tensors of two graphs)."""

    def __init__(self, source: Any, target: Any) -> None:
        self.input_tensors = [source]
        self.outputs = [target]
        self.arguments = self

    def fill_in(self, values: Mapping[int, tf.Tensor]) -> tuple[tuple[tf.Tensor], dict[str, Any]]:
        return (values[id(self.input_tensors[0])],), {}


def _leads_to_add(graph: _Graph, step: _Step) -> bool:
    """Whether ``step``'s output goes, through inference identities only (:data:`_IDENTITY_TYPES`: a dropout between a
    block's last layer and its residual sum does not end the block), to a residual ``Add`` alone."""
    while len(graph.consumers.get(step.output, [])) == 1:
        step = graph.consumers[step.output][0]
        if isinstance(step.layer, keras.layers.Add):
            return True
        if not isinstance(step.layer, _IDENTITY_TYPES):
            return False
    return False


class _Graph:
    """The layer calls of a single-input functional model, in topological order (nested functional
    models inlined)."""

    def __init__(self, model: keras.Model) -> None:
        functional = model if hasattr(model, "_nodes_by_depth") else getattr(model, "_functional", None)
        if functional is None or not hasattr(functional, "_nodes_by_depth"):
            raise ModelError(f"model {model.name!r} is not a Keras functional model; the deconvolution walks "
                             "the layer graph of functional (or built Sequential) models")
        if len(functional.inputs) != 1:
            described = ", ".join(f"{getattr(x, 'name', '?')} {list(getattr(x, 'shape', ()) or ())}"
                                  for x in functional.inputs)
            raise ModelError(f"model {model.name!r} has {len(functional.inputs)} inputs ({described}); tfaural "
                             "deconvolves, auralises and tags models of one input, the audio or its spectrogram")
        self.input = functional.inputs[0]
        self.output = functional.outputs[0]
        self.steps: list[_Step] = []
        self.producer: dict[int, _Step] = {}
        self.consumers: dict[int, list[_Step]] = {}
        self.by_name: dict[str, _Step] = {}
        self.shared: set[str] = set()
        self._inlined: set[int] = set()
        self._add_nodes(functional)
        for name in self.shared:
            del self.by_name[name]

    def _add_nodes(self, functional: Any) -> None:
        """Appends the layer calls of ``functional`` in topological order, those of a nested functional model
        (a backbone such as ``keras.applications.MobileNetV2`` called as a layer) inlined between two identity
        steps that join its input and output to the tensors of the call."""
        by_depth = functional._nodes_by_depth
        for depth in sorted(by_depth, reverse=True):
            for node in by_depth[depth]:
                if node.is_input:
                    continue
                layer = node.operation
                if len(node.outputs) != 1:
                    raise ModelError(f"layer {layer.name!r} has {len(node.outputs)} outputs; expected one")
                inner = _nested_functional(layer)
                if inner is None:
                    self._add_step(layer, node)
                    continue
                if id(layer) in self._inlined:
                    raise ModelError(f"model {layer.name!r} is called more than once in the model; its layers' "
                                     "outputs are ambiguous")
                self._inlined.add(id(layer))
                self._add_step(keras.layers.Identity(name=f"{layer.name}_input"),
                               _Join(node.input_tensors[0], inner.inputs[0]))
                self._add_nodes(inner)
                self._add_step(keras.layers.Identity(name=layer.name), _Join(inner.outputs[0], node.outputs[0]))

    def _add_step(self, layer: Any, node: Any) -> None:
        step = _Step(len(self.steps), layer, tuple(id(t) for t in node.input_tensors), id(node.outputs[0]), node)
        self.steps.append(step)
        self.producer[step.output] = step
        for tensor in step.inputs:
            self.consumers.setdefault(tensor, []).append(step)
        if layer.name in self.by_name:
            self.shared.add(layer.name)
        self.by_name[layer.name] = step

    def step(self, name: str) -> _Step:
        if name in self.shared:
            raise ModelError(f"layer {name!r} is called more than once in the model; its output is ambiguous")
        if name not in self.by_name:
            raise ParameterError(f"layer={name!r} is invalid: the model has no layer of that name")
        return self.by_name[name]

    def ancestors(self, tensors: Sequence[int]) -> set[int]:
        """Indices of the steps that ``tensors`` depend on."""
        found: set[int] = set()
        todo = [t for t in tensors if t in self.producer]
        while todo:
            step = self.producer[todo.pop()]
            if step.index in found:
                continue
            found.add(step.index)
            todo += [t for t in step.inputs if t in self.producer]
        return found

    def descendants(self, tensor: int) -> set[int]:
        """Indices of the steps that depend on ``tensor``."""
        found: set[int] = set()
        todo = [tensor]
        while todo:
            for step in self.consumers.get(todo.pop(), []):
                if step.index not in found:
                    found.add(step.index)
                    todo.append(step.output)
        return found

    def forward(self, x: tf.Tensor, targets: Sequence[int]) -> dict[int, tf.Tensor]:
        """Runs the steps ``targets`` depend on (inference mode); returns every computed tensor by id."""
        values = {id(self.input): x}
        needed = self.ancestors(targets)
        for step in self.steps:
            if step.index not in needed:
                continue
            args, kwargs = step.node.arguments.fill_in(values)
            if isinstance(step.layer, keras.layers.Layer):
                kwargs = {**kwargs, "training": False}
            out = step.layer(*args, **kwargs)
            if isinstance(out, keras.KerasTensor):  # a symbolic pass (DeconvNet.output_shapes): shapes only
                values[step.output] = out
                continue
            # a mixed-precision model computes in float16; the walk goes back in float32 from its values
            values[step.output] = tf.cast(out, tf.float32) if out.dtype in (tf.float16, tf.bfloat16) else out
        return values


def _pre_activation(step: _Step, x: tf.Tensor) -> tf.Tensor:
    """The output of ``step`` (on its input ``x``) before its own activation (the logits of a sigmoid layer)."""
    layer = step.layer
    if isinstance(layer, _ACTIVATION_LAYERS):
        return x
    if isinstance(layer, keras.layers.Dense):
        out = linalg.matmul(x, tf.convert_to_tensor(layer.kernel))
    else:
        out = _linear_part(layer, x)
    if layer.use_bias:
        out = out + tf.convert_to_tensor(layer.bias)
    return out


# ---------------------------------------------------------------------------------------------
# The deconvolution network

_F = TypeVar("_F", bound=Callable[..., Any])


def _not_converted(fn: _F) -> _F:
    """Leaves ``fn`` to run as written inside ``tf.function`` (AutoGraph would convert every function
    it calls; there is no tensor-dependent Python control flow here, and tracing gets ~10x faster)."""
    return cast(_F, tf.autograph.experimental.do_not_convert(fn))


@dataclasses.dataclass(frozen=True)
class _Walk:
    """The part of the graph between the input domain and one seeded layer."""

    seed: _Step
    steps: tuple[_Step, ...]  # topological order, seed last
    rules: tuple[_Rule, ...]
    seed_activation: str


class DeconvNet:
    """The deconvolution network of one model (weights shared with it, nothing copied).

    Args:
        model: A single-input Keras functional model (tfaural's Choi CNN and SampleCNN family,
            or any CNN built from the layers of the module docstring).
        method: ``"deconvnet"`` (Zeiler–Fergus), ``"guided"`` (guided backpropagation) or
            ``"gradient"`` (plain gradient / saliency): the rule of the walk at ReLUs and other
            activations (see the module docstring).
        input_layer: Name of the layer whose output is the input domain the walk ends in
            (``None``: the model's input after its front-end layers; see the module docstring).
        extra_levels: Layers to number as levels after the conv blocks, in this order (``N + 1``, ...):
            what a model's convolutions do not mark, such as a transformer block's residual sum.

    Attributes:
        levels: The levels ``layer`` accepts besides layer names (see the module docstring).
        layer_names: ``{level: name of the layer seeded for it}``.
        input_layer: The layer whose output is the input domain, ``None`` for the model input.
        front_end: That layer itself (``None`` for the model input).
        domain_shape: Shape of the input domain, batch axis first (``None`` for unknown sizes).
        method: The rule at activations.

    Raises:
        ModelError: If the model is not a single-input functional model or has no conv layer.
            (A layer without a backward rule raises a ModelError naming it when a layer above
            it is deconvolved, or its width asked for.)
        ParameterError: For an unknown ``method`` or ``input_layer``.
    """

    def __init__(self, model: keras.Model, *, method: str = "deconvnet", input_layer: str | None = None,
                 extra_levels: Sequence[str] = ()) -> None:
        if method not in METHODS:
            raise ParameterError(f"method={method!r} is invalid: expected one of {METHODS}")
        self.model = model
        self.method = method
        self._graph = _Graph(model)
        self._domain = self._domain_tensor(input_layer)
        self._domain_steps = self._graph.descendants(self._domain)
        domain = self._graph.input if self._domain == id(self._graph.input) else \
            self._graph.producer[self._domain].node.outputs[0]
        self.domain_shape: tuple[int | None, ...] = tuple(domain.shape)
        self.front_end: keras.layers.Layer | None = (None if self._domain == id(self._graph.input)
                                                     else self._graph.producer[self._domain].layer)
        self.layer_names: dict[int, str] = self._blocks()
        self.extra_levels: tuple[str, ...] = tuple(extra_levels)
        for name in self.extra_levels:  # named layers heard besides the conv blocks: levels N + 1, N + 2, ...
            step = self._graph.step(name)
            if step.index not in self._domain_steps:
                raise ParameterError(f"extra level {name!r}: the layer does not depend on the input domain "
                                     f"({self.input_layer or 'the model input'}); nothing to deconvolve to")
            if name in self.layer_names.values():
                level = next(k for k, v in self.layer_names.items() if v == name)
                raise ParameterError(f"extra level {name!r} already is level {level}")
            self.layer_names[max(self.layer_names, default=0) + 1] = name
        if not self.layer_names:
            raise ModelError(f"model {model.name!r} has no Conv1D/Conv2D or separable convolution layer after its "
                             "input domain (name the layers to hear with extra_levels=, --extra-levels)")
        self.levels: tuple[int, ...] = tuple(self.layer_names)
        self._walks: dict[str, _Walk] = {}
        # In graphs: one traced function per (layer, input signature) for every graph that walks it (see
        # _walk_function), with the positions of the forward tensors it reads.
        self._walk_functions: dict[Any, tuple[Any, tuple[bool, ...]]] = {}
        self.expansion = walk_expansion(model)  # for the feature chunks (map_feature_chunks)

    @property
    def input_layer(self) -> str | None:
        """The name of the layer whose output is the input domain (``None``: the model input)."""
        return None if self.front_end is None else self.front_end.name

    # ----------------------------------------------------------------- structure

    def _domain_tensor(self, input_layer: str | None) -> int:
        graph = self._graph
        if input_layer is not None:
            if not isinstance(input_layer, str):
                raise ParameterError(f"input_layer={input_layer!r} is invalid: expected a layer name")
            return graph.step(input_layer).output
        tensor = id(graph.input)
        while len(graph.consumers.get(tensor, [])) == 1:
            layer = graph.consumers[tensor][0].layer
            if not (isinstance(layer, FRONT_END_TYPES) or getattr(layer, "deconv_front_end", False)):
                break
            tensor = graph.consumers[tensor][0].output
        return tensor

    def _blocks(self) -> dict[int, str]:
        """``{level: name of the layer seeded for it}`` (see the module docstring)."""
        graph = self._graph
        if getattr(self.model, "tfaural_config", None) is not None:
            from tfaural.models import conv_blocks  # deferred: only tfaural's own models have named blocks

            try:
                blocks = conv_blocks(self.model)
            except ModelError:
                blocks = ()  # a tfaural model without conv blocks (aggregation): the generic search
            if blocks:
                return {b.level: b.output for b in blocks if graph.step(b.output).index in self._domain_steps}
        chain = (keras.layers.BatchNormalization, *_ACTIVATION_LAYERS, *_MAX_POOL_TYPES, *_AVERAGE_POOL_TYPES)
        names: dict[int, str] = {}
        for step in graph.steps:
            if not isinstance(step.layer, _BLOCK_TYPES) or step.index not in self._domain_steps:
                continue
            if all(n == 1 for n in step.node.input_tensors[0].shape[1:-1]):  # on a pooled summary (a squeeze-
                continue  # and-excitation gate's convolutions): no map of the input to hear
            end = step
            while len(graph.consumers.get(end.output, [])) == 1:
                after = graph.consumers[end.output][0]
                if isinstance(after.layer, keras.layers.Add):  # a residual sum: the block goes on to its output
                    end = after
                    continue
                if isinstance(after.layer, _IDENTITY_TYPES) and _leads_to_add(graph, after):
                    end = after  # a dropout before the sum (EfficientNet's blocks): the block goes on to it
                    continue
                if not isinstance(after.layer, chain) or (  # a rectifier continues the block, a sigmoid ends it
                    isinstance(after.layer, _ACTIVATION_LAYERS) and _layer_activation(after.layer) != "relu"
                    and _layer_activation(after.layer) not in RECTIFIERS
                ):
                    break
                end = after
            if end.layer.name not in names.values():  # a residual block's last conv and its shortcut's: one level
                names[len(names) + 1] = end.layer.name
        return names

    def _walk_to(self, name: str) -> _Walk:
        if name in self._walks:
            return self._walks[name]
        graph = self._graph
        seed = graph.step(name)
        if seed.output != self._domain and seed.index not in self._domain_steps:
            raise ModelError(f"layer {name!r} does not depend on the input domain "
                             f"{self.input_layer or 'the model input'!r}; nothing to deconvolve to")
        between = graph.ancestors([seed.output]) & self._domain_steps
        steps = tuple(s for s in graph.steps if s.index in between)
        rules = []
        for step in steps:
            rule = _rule(step.layer)
            if isinstance(rule, str):
                raise ModelError(
                    f"cannot deconvolve through layer {step.layer.name!r} ({type(step.layer).__name__}) of model "
                    f"{self.model.name!r}: {rule}"
                )
            rules.append(rule)
        walk = _Walk(seed, steps, tuple(rules), _layer_activation(seed.layer))
        self._walks[name] = walk
        return walk

    def channels_first_layers(self) -> list[keras.layers.Layer]:
        """The ``channels_first`` layers that a level's walk goes through (its own seed included), which no walk
        can: a model of them is not read as channels-last (its input domain is not what it seems) either."""
        graph = self._graph
        walked = graph.ancestors([graph.by_name[name].output for name in self.layer_names.values()
                                  if name in graph.by_name])
        return [step.layer for step in graph.steps if step.index in walked & self._domain_steps
                and getattr(step.layer, "data_format", "channels_last") == "channels_first"]

    def layer_name(self, layer: int | str) -> str:
        """The name of the layer seeded for ``layer`` (a level or a layer name)."""
        if isinstance(layer, str):
            self._graph.step(layer)
            return layer
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or int(layer) not in self.layer_names:
            raise ParameterError(
                f"layer={layer!r} is invalid for model {self.model.name!r}: expected one of {list(self.levels)}"
            )
        return self.layer_names[int(layer)]

    def n_features(self, layer: int | str) -> int:
        """Number of feature maps (channels) of ``layer``."""
        walk = self._walk_to(self.layer_name(layer))
        return int(walk.seed.node.outputs[0].shape[-1])

    # ----------------------------------------------------------------- computation

    @_not_converted
    def activations(self, x: tf.Tensor | np.ndarray, *, layers: Sequence[int | str]) -> dict[Any, tf.Tensor]:
        """Each feature map's maximum activation on ``x``, per layer, from one forward pass (no walk).

        The same values as the ``activation`` that :meth:`__call__` returns with
        ``return_activation=True`` for all features of a layer; cheap enough to choose which
        features to deconvolve (e.g. the most active ones) before deconvolving only those.

        Args:
            x: The model's input (as :meth:`__call__`).
            layers: Levels or layer names.

        Returns:
            ``{layer: float32 [batch, n_maps]}``.
        """
        walks = {layer: self._walk_to(self.layer_name(layer)) for layer in layers}
        values = self._graph.forward(self._model_input(x), [w.seed.output for w in walks.values()])
        result = {}
        for layer, walk in walks.items():
            seed = self._seed_values(walk, values)
            result[layer] = feature_maxima(seed, tf.range(int(seed.shape[-1]), dtype=tf.int32))
        return result

    def symbolic_output(self, name: str) -> Any:
        """The symbolic (Keras) output of layer ``name``, nested models' layers included: its ``shape`` and
        ``dtype``.

        Raises:
            ParameterError: If the model has no such layer. ModelError: If the layer is called more than once.
        """
        return self._graph.step(name).node.outputs[0]

    def output_shapes(self, input_shape: Sequence[int | None], names: Sequence[str]) -> list[tuple[int | None, ...]]:
        """The shapes of layers ``names``' outputs for an input of ``input_shape`` (the model's input, channel axis
        included), by Keras' shape inference alone: nothing is computed, and a layer that cannot take its input
        (a ``valid`` convolution or pooling longer than it) raises ``ValueError`` without running a kernel.

        Raises:
            ValueError: If a layer refuses the shape. ParameterError: If the model has no such layer.
        """
        targets = [self._graph.step(name).output for name in names]
        values = self._graph.forward(keras.KerasTensor(tuple(input_shape), dtype="float32"), targets)
        return [tuple(values[target].shape) for target in targets]

    def layer_outputs(self, x: tf.Tensor | np.ndarray, names: Sequence[str], *,
                      with_model_output: bool = False) -> list[tf.Tensor]:
        """The outputs of layers ``names`` on ``x`` from one forward pass (inference mode), nested models' layers
        included, where ``model.get_layer(name).output`` cannot reach them; with ``with_model_output`` the
        model's output last (from the same pass, so a ``tf.GradientTape`` links the two).

        Raises:
            ParameterError: If the model has no such layer. ModelError: If a layer is called more than once.
        """
        targets = [self._graph.step(name).output for name in names]
        if with_model_output:
            targets.append(id(self._graph.output))
        values = self._graph.forward(self._model_input(x), targets)
        return [values[target] for target in targets]

    def _model_input(self, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        x = tf.convert_to_tensor(x, tf.float32)
        expected = self._graph.input.shape
        if x.shape.rank == len(expected) - 1 and expected[-1] == 1:
            x = x[..., tf.newaxis]  # [batch, freq, frames] / [batch, samples]: add the channel axis
        return x

    def _seed_values(self, walk: _Walk, values: dict[int, tf.Tensor]) -> tf.Tensor:
        if walk.seed_activation in ("linear", "relu") or walk.seed_activation in RECTIFIERS:
            return values[walk.seed.output]
        return _pre_activation(walk.seed, values[walk.seed.inputs[0]])

    def _features(self, features: Sequence[int] | tf.Tensor | None, n_maps: int) -> tf.Tensor:
        if features is None:
            return tf.range(n_maps, dtype=tf.int32)
        if isinstance(features, (tf.Tensor, tf.Variable)):
            feats = tf.cast(features, tf.int32)
            checks = [
                tf.debugging.assert_rank(feats, 1, message="features must be a 1-D list of feature indices"),
                tf.debugging.assert_non_negative(feats, message="feature indices must be >= 0"),
                tf.debugging.assert_less(feats, n_maps,
                                         message=f"feature indices must be < {n_maps} (maps in the layer)"),
                tf.debugging.assert_equal(tf.size(tf.unique(tf.reshape(feats, [-1])).y), tf.size(feats),
                                          message="feature indices must not repeat (ask for each feature once)"),
            ]
            with tf.control_dependencies([c for c in checks if c is not None]):
                return tf.identity(feats)  # the checks run before any gather can fail less clearly
        values = np.asarray(features).reshape(-1)
        if values.size == 0 or not np.issubdtype(values.dtype, np.integer):
            raise ParameterError(f"features={features!r} is invalid: expected a non-empty list of integers")
        bad = [int(v) for v in values if not 0 <= v < n_maps]
        if bad:
            raise ParameterError(
                f"feature indices {bad} are out of range: the layer has {n_maps} maps (0-{n_maps - 1})"
            )
        unique, counts = np.unique(values, return_counts=True)
        if np.any(counts > 1):
            raise ParameterError(
                f"feature indices {unique[counts > 1].tolist()} are repeated: ask for each feature once"
            )
        return tf.constant(values, tf.int32)

    def _walk_down(self, walk: _Walk, values: dict[int, tf.Tensor], seed: tf.Tensor,
                   switches: Mapping[int, _Switches], feats: tf.Tensor) -> tf.Tensor:
        """Propagates the selected maps of ``seed`` (``[batch, ..., channels]``) down to the domain."""
        ctx = _Context(tf.shape(seed)[0], tf.shape(feats)[0], feats, self.method, switches)
        cots: dict[int, _Cot] = {walk.seed.output: _Sparse(tf.gather(seed, feats, axis=-1), int(seed.shape[-1]))}
        for step, rule in zip(reversed(walk.steps), reversed(walk.rules)):
            cot = cots.pop(step.output, None)
            if cot is None:
                continue
            if isinstance(cot, _Unpooled) and rule not in _LAZY_RULES:
                cot = _Dense(ctx.dense(cot))
            xs = [values[t] for t in step.inputs]
            for tensor, back in zip(step.inputs, rule(step, xs, values[step.output], cot, ctx, step is walk.seed)):
                if back is None or not self._leads_to_domain(tensor):
                    continue
                cots[tensor] = back if tensor not in cots else _add(cots[tensor], back, ctx)
        if self._domain not in cots:
            raise ModelError(f"layer {walk.seed.layer.name!r}: no path back to the input domain")
        return self._to_output_layout(ctx.split(ctx.dense(cots[self._domain])))

    def _walk_function(self, walk: _Walk, values: dict[int, tf.Tensor], seed: tf.Tensor,
                       switches: Mapping[int, _Switches]) -> Callable[[tf.Tensor], tf.Tensor]:
        """``chunk -> maps``: :meth:`_walk_down` of ``walk`` for the feature indices ``chunk``.

        Eagerly this is the walk itself. In a graph (a ``tf.function``, e.g. an export's signatures)
        each layer's walk is traced once as a function of its own, called by every graph that
        deconvolves the layer (an export's ``deconvolve`` and ``auralise`` signatures), instead of
        being traced again inside each of them: the export is traced faster and its graph is
        smaller (it loads in less memory). The function takes the layer's forward tensors as inputs,
        but a call passes only those the walk reads (by value or shape: which depends on the layers
        and the method, so it is read off the traced function); the others are passed as empty
        tensors, so that the feature-chunk loop that calls the walk does not keep them alive.
        Grappler inlines the call, so the computation is the same as inline.
        """
        direct = functools.partial(self._walk_down, walk, values, seed, switches)
        if not tf.inside_function():
            return direct
        value_keys = tuple(sorted({t for step in walk.steps for t in (*step.inputs, step.output)}))
        switch_keys = tuple(sorted({step.inputs[0] for step in walk.steps
                                    if isinstance(step.layer, _MAX_POOL_TYPES)}))
        if not set(value_keys) <= values.keys() or not set(switch_keys) <= switches.keys():
            return direct
        needed = [values[t] for t in value_keys]
        switch_values = [switches[t] for t in switch_keys]
        specs = ([tf.TensorSpec(t.shape, t.dtype) for t in needed], tf.TensorSpec(seed.shape, seed.dtype),
                 tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), switch_values),
                 tf.TensorSpec([None], tf.int32))
        key = (walk.seed.layer.name, repr(specs))
        if key not in self._walk_functions:

            def run(needed: list[tf.Tensor], seed: tf.Tensor, switch_values: list[_Switches],
                    chunk: tf.Tensor) -> tf.Tensor:
                return self._walk_down(walk, dict(zip(value_keys, needed)), seed,
                                       dict(zip(switch_keys, switch_values)), chunk)

            concrete = tf.function(run, autograph=False).get_concrete_function(*specs)
            read = tuple(bool(p.consumers()) for p in concrete.graph.inputs[:len(needed)])
            self._walk_functions[key] = (concrete, read)
        concrete, read = self._walk_functions[key]

        def call(chunk: tf.Tensor) -> tf.Tensor:
            # a forward tensor the walk does not read goes in as an empty stand-in of its shape (any size
            # the traced shape allows), not itself: the loop calling the walk would keep it alive
            passed = [t if used or t.shape.is_fully_defined() else
                      tf.zeros([0 if n is None else n for n in t.shape.as_list()], t.dtype)
                      for t, used in zip(needed, read)]
            return concrete(passed, seed, switch_values, chunk)

        return call

    def _record_switches(self, walk: _Walk, values: dict[int, tf.Tensor], switches: dict[int, _Switches], *,
                         chunk_elements: int | None = None) -> None:
        """Fills ``switches`` with the unpooling switches of every max pooling on ``walk``.

        They depend on the forward pass only, so they are computed here, once, outside the
        feature-chunk loop; made inside its body they would be recomputed for every chunk
        (an argmax over each pooling's whole input per chunk: the Choi CNN's deconvolution of
        all 320 features of a 4-s clip took 2.36 s that way, 1.95 s this way, on a 2-core Intel
        Xeon). So is what else the walks need of them: for overlapping windows, which windows
        share a switch (:func:`_merge_masks`); for a pooling right after a one-input-channel
        convolution (a 2D CNN's first layer on a spectrogram), the weights with the switches
        folded in (:func:`_folded_weights`), when they hold at most half of ``chunk_elements``
        (``None`` or ``0``: :data:`DEFAULT_CHUNK_ELEMENTS`) -- that is, when a chunk of the walk
        holds at least about 8 features, so that they are read for many (decided in-graph when
        the input's size is not known while tracing).
        """
        limit = DEFAULT_CHUNK_ELEMENTS if not chunk_elements or chunk_elements <= 0 else int(chunk_elements)
        for step in walk.steps:
            if isinstance(step.layer, _MAX_POOL_TYPES) and step.inputs[0] not in switches:
                x = values[step.inputs[0]]
                pool_size, strides, padding = _pool_args(step.layer, len(x.shape) - 2)
                indices = pool_with_switches(x, pool_size, strides, padding)[1]
                overlapping = any(p > s for p, s in zip(pool_size, strides))
                merge = _merge_masks(indices, pool_size, strides) if overlapping else ()
                folded = self._folded(step, indices, pool_size, strides, padding, limit // 2)
                switches[step.inputs[0]] = _Switches(indices, merge, folded)

    def _folded(self, pool: _Step, switches: tf.Tensor, pool_size: tuple[int, ...], strides: tuple[int, ...],
                padding: str, limit: int) -> tuple[tf.Tensor, ...]:
        """``(_folded_weights(...),)`` for the convolution whose signal comes back through ``pool``, if it is a
        one-output-channel adjoint (:func:`_few_taps`) and the weights have at most ``limit`` elements; ``()``
        if not. The signal reaches that convolution unchanged in layout from the pooling through the rules
        that keep it pooled (:data:`_LAZY_RULES`: activations, batch normalisation, dropout), so the
        convolution is found through the chain of such single-input layers below the pooling.
        """
        if padding != "valid":
            return ()
        step = self._graph.producer.get(pool.inputs[0])
        while step is not None and len(step.inputs) == 1 and _rule(step.layer) in _LAZY_RULES \
                and _rule(step.layer) is not _conv_rule:
            step = self._graph.producer.get(step.inputs[0])
        if step is None or _rule(step.layer) is not _conv_rule or step.index not in self._domain_steps:
            return ()
        layer = step.layer
        rank = len(layer.kernel.shape) - 2
        if rank != len(pool_size) or not _plain_steps(layer, rank):
            return ()
        kernel = _adjoint_kernel(layer, rank)
        if not _few_taps(kernel):
            return ()
        pads = _adjoint_pads(layer, rank)
        n_keys = len(_folded_keys(pool_size, strides, [int(n) for n in kernel.shape[:rank]], pads))
        elements = tf.size(switches, out_type=tf.int64) * n_keys
        fits = tf.get_static_value(elements <= limit)
        if fits is not None:
            return (_folded_weights(switches, kernel, pool_size, strides, pads),) if fits else ()
        empty = tf.zeros([0, *[1] * rank, int(kernel.shape[-2]), n_keys], kernel.dtype)
        return (tf.cond(elements <= limit, lambda: _folded_weights(switches, kernel, pool_size, strides, pads),
                        lambda: empty),)

    def _leads_to_domain(self, tensor: int) -> bool:
        producer = self._graph.producer.get(tensor)
        return tensor == self._domain or (producer is not None and producer.index in self._domain_steps)

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """The shape of the deconvolved maps of one input and feature, in the documented layout (module
        docstring): ``domain_shape[1:]`` without a trailing channel axis of 1, or ``(channels, steps)``."""
        shape = tuple(self.domain_shape)
        if len(shape) >= 3 and shape[-1] == 1:
            return shape[1:-1]
        if len(shape) == 3:
            return (shape[2], shape[1])
        return shape[1:]

    def _to_output_layout(self, y: tf.Tensor) -> tf.Tensor:
        """``[batch, k, *domain_shape]`` -> the documented layout (:attr:`output_shape`)."""
        shape = self.domain_shape
        if len(shape) >= 3 and shape[-1] == 1:
            return y[..., 0]  # [batch, k, freq, frames] or [batch, k, samples]
        if len(shape) == 3:
            return tf.transpose(y, [0, 1, 3, 2])  # [batch, k, channels, steps]
        return y

    @_not_converted
    def __call__(
        self,
        x: tf.Tensor | np.ndarray,
        *,
        layer: int | str,
        features: Sequence[int] | tf.Tensor | None = None,
        return_activation: bool = False,
        chunk_elements: int | None = None,
        per_chunk: Callable[[tf.Tensor], Any] | None = None,
        per_chunk_dtypes: Any = tf.float32,
    ) -> Any:
        """Deconvolves ``features`` of ``layer`` for every input of the batch.

        Args:
            x: The model's input, e.g. STFT magnitude ``[batch, freq, frames(, 1)]`` for the
                Choi CNN or a waveform ``[batch, samples(, 1)]`` for the SampleCNN family (the
                trailing channel axis may be left out). Any size the conv layers accept.
            layer: A level (see :attr:`levels`) or a layer name; a Python value (each layer
                is its own graph: exported signatures switch between them with ``tf.switch_case``).
            features: Feature (channel) indices, an int list or int32 tensor ``[k]``; ``None``: all.
            return_activation: Also return each selected feature's maximum activation over
                its map, float32 ``[batch, k]`` (the feature's response strength).
            chunk_elements: Bound of the walk's working set: the features go down in
                chunks whose largest tensor has at most this many elements
                (:func:`features_per_chunk`; at least one feature per chunk). ``None``:
                :data:`DEFAULT_CHUNK_ELEMENTS`; ``0``: all features in one pass.
            per_chunk: Applied to each chunk's deconvolved maps ``[batch, kc, ...]`` inside
                the loop; its results (tensors with the features on axis 1) are what is
                concatenated and returned instead of the maps (e.g. their auralisation).
            per_chunk_dtypes: The dtype (or tuple of dtypes) of ``per_chunk``'s results.

        Returns:
            The deconvolved maps in the input domain (shapes in the module docstring) or what
            ``per_chunk`` makes of them, and with ``return_activation`` the activations as well.

        Raises:
            ParameterError: Invalid ``layer``, out-of-range or repeated feature indices.
        """
        walk = self._walk_to(self.layer_name(layer))
        feats = self._features(features, int(walk.seed.node.outputs[0].shape[-1]))
        model_input = self._model_input(x)
        values = self._graph.forward(model_input, [walk.seed.output])
        seed = self._seed_values(walk, values)
        switches: dict[int, _Switches] = {}
        self._record_switches(walk, values, switches, chunk_elements=chunk_elements)
        deconvolved = self._chunked(
            self._walk_function(walk, values, seed, switches), model_input, feats,
            chunk_elements=chunk_elements, per_chunk=per_chunk, per_chunk_dtypes=per_chunk_dtypes,
        )
        if not return_activation:
            return deconvolved
        return deconvolved, feature_maxima(seed, feats)

    def _chunked(
        self,
        walk: Callable[[tf.Tensor], tf.Tensor],
        x: tf.Tensor,
        feats: tf.Tensor,
        *,
        chunk_elements: int | None,
        per_chunk: Callable[[tf.Tensor], Any] | None,
        per_chunk_dtypes: Any,
    ) -> Any:
        """Runs ``walk(chunk)`` (then ``per_chunk``) over chunks of ``feats`` (see :meth:`__call__`).

        Whatever depends on the forward pass only (the unpooling switches,
        :meth:`_record_switches`) is made before, outside the loop, and shared by every chunk.
        """
        limit = DEFAULT_CHUNK_ELEMENTS if chunk_elements is None else int(chunk_elements)
        size = tf.size(feats) if limit <= 0 else features_per_chunk(
            x, expansion=self.expansion, chunk_elements=limit)

        def step(chunk: tf.Tensor) -> Any:
            maps = walk(chunk)
            return maps if per_chunk is None else per_chunk(maps)

        return map_feature_chunks(step, feats, size, dtypes=per_chunk_dtypes if per_chunk else tf.float32)

    @_not_converted
    def deconvolve_layers(
        self,
        x: tf.Tensor | np.ndarray,
        *,
        layers: Sequence[int | str] | None = None,
        features: Sequence[int] | tf.Tensor | None = None,
        chunk_elements: int | None = None,
        per_chunk: Callable[[tf.Tensor], Any] | None = None,
        per_chunk_dtypes: Any = tf.float32,
    ) -> dict[Any, Any]:
        """Deconvolves several layers with one shared forward pass (see :meth:`__call__`).

        Args:
            x: The model's input.
            layers: Levels or layer names (``None``: every level).
            features: Feature indices for every layer (``None``: all maps of each layer).
            chunk_elements: Bound of the walk's working set (see :meth:`__call__`).
            per_chunk: Applied to each chunk's maps inside the loop (see :meth:`__call__`).
            per_chunk_dtypes: The dtype (or tuple of dtypes) of ``per_chunk``'s results.

        Returns:
            ``{layer: deconvolved}``. The layers are computed one after another (each walk
            already uses every core; running them concurrently only thrashes caches). The
            features' maximum activations of the same call are left in
            ``self.last_activations`` (``{layer: [batch, k]}``).
        """
        wanted = list(self.levels if layers is None else layers)
        walks = {layer: self._walk_to(self.layer_name(layer)) for layer in wanted}
        model_input = self._model_input(x)
        values = self._graph.forward(model_input, [w.seed.output for w in walks.values()])
        switches: dict[int, _Switches] = {}
        result: dict[Any, Any] = {}  # keyed by the levels (ints) or names (strs) asked for
        self.last_activations: dict[Any, tf.Tensor] = {}
        previous: Any = None
        for layer, walk in walks.items():
            seed = self._seed_values(walk, values)
            if previous is not None:
                with tf.control_dependencies(tf.nest.flatten(previous)):
                    seed = tf.identity(seed)
            feats = self._features(features, int(walk.seed.node.outputs[0].shape[-1]))
            self._record_switches(walk, values, switches, chunk_elements=chunk_elements)
            previous = self._chunked(
                self._walk_function(walk, values, seed, switches), model_input, feats,
                chunk_elements=chunk_elements, per_chunk=per_chunk, per_chunk_dtypes=per_chunk_dtypes,
            )
            result[layer] = previous
            self.last_activations[layer] = feature_maxima(seed, feats)
        return result


def _single_output_convolution(y: tf.Tensor, kernel: tf.Tensor, paddings: Sequence[Sequence[Any]]) -> tf.Tensor:
    """A stride-1 convolution with one output channel, as matrix products and shifted sums.

    oneDNN runs a many-to-one-channel convolution far below the machine's rate (~20 GFLOP/s in a
    profile on the 2-core development machine for the Choi CNN's 64 channels -> the spectrogram;
    a few GFLOP/s for musicnn's 204 channels -> the mel spectrogram with 266 or 469 taps); a
    ``[positions, channels] x [channels, taps]`` product reads the input once, and the taps'
    maps are then summed with their shifts (:func:`_shifted_sum`: a few reshapes, whatever the
    number of taps, so the graph stays small).

    The kernel's rows (its taps along the last axis) go in groups of at most ``max(1, channels //
    row)`` rows, one group after the other in an in-graph loop, so that a group's product holds
    about as many values as ``y`` (``channels`` maps) whatever the kernel -- the walk's memory
    bound (:data:`DEFAULT_CHUNK_ELEMENTS`) holds for large kernels too -- and the graph has the
    same few ops for any kernel (an export holds many walks). A kernel of at most ``channels``
    taps is one group, without a loop; one of at most ``channels / 4`` taps (:func:`_few_taps`:
    the paper's CNN's first layer) has each tap's window summed instead (:func:`_window_sum`).

    Args:
        y: ``[batch, *spatial, channels]``, one or two spatial axes.
        kernel: ``[*kernel, channels, 1]`` (cross-correlation, as ``tf.nn.convolution``).
        paddings: ``[[0, 0], [before, after] per spatial axis, [0, 0]]`` applied to the input.

    Returns:
        ``[batch, *out_spatial, 1]`` equal to ``tf.nn.convolution(tf.pad(y, paddings), kernel, "VALID")``.
    """
    size = [int(n) for n in kernel.shape[:-2]]
    rank, channels = len(size), int(kernel.shape[-2])
    if _few_taps(kernel):  # all taps at once, their windows summed (the paper's CNN's first layer: 9 taps)
        weighted = tf.matmul(tf.reshape(kernel, [-1, channels]), tf.reshape(y, [-1, channels]), transpose_b=True)
        return _window_sum(tf.reshape(weighted, tf.concat([[-1], tf.shape(y)[:-1]], axis=0)), size, paddings)
    row, rows = size[-1], int(np.prod(size[:-1]))  # taps per row (the last axis), rows (1 in 1-D)
    n_groups = -(-rows // max(1, channels // row))  # at most max(1, channels // row) rows each
    per_group = -(-rows // n_groups)  # as even as can be: the last group's missing rows are few
    # [groups, taps per group, channels]; the last group's missing rows are zero taps (zero maps)
    taps = tf.pad(tf.reshape(kernel, [rows, row, channels]), [[0, n_groups * per_group - rows], [0, 0], [0, 0]])
    taps = tf.reshape(taps, [n_groups, per_group * row, channels])
    flat = tf.reshape(y, [-1, channels])  # [positions, channels]

    def group(index: Any) -> tf.Tensor:
        weighted = tf.matmul(flat, taps[index], transpose_b=True)  # [positions, taps of the group]
        weighted = tf.reshape(weighted, tf.concat([tf.shape(y)[:-1], [per_group * row]], axis=0))
        maps = tf.transpose(weighted, [*range(rank), rank + 1, rank])  # the taps before the last axis
        return _shifted_sum(maps, size, paddings, first_row=index * per_group)

    if n_groups == 1:
        return group(0)
    # one group after the other (an in-graph loop: a few ops whatever the kernel, one group's tensors at a time)
    _, total = tf.while_loop(lambda i, _: i < n_groups, lambda i, total: (i + 1, total + group(i)),
                             (tf.constant(1), group(0)), parallel_iterations=1)
    return total


def _window_sum(weighted: tf.Tensor, size: Sequence[int], paddings: Sequence[Sequence[Any]]) -> tf.Tensor:
    """``[taps, batch, *spatial]`` per-tap maps -> their sum with each tap's shift: ``[batch, *out, 1]``.

    One window of the padded maps per tap, summed: for a few taps (a window per tap is an op per
    tap; :func:`_shifted_sum` takes a few ops for any number).
    """
    rank = len(size)
    weighted = tf.pad(weighted, [[0, 0], *paddings[:-1]])
    shape = tf.shape(weighted)
    out_sizes = [shape[2 + i] - size[i] + 1 for i in range(rank)]
    windows = [weighted[(index, slice(None), *[slice(offset[i], offset[i] + out_sizes[i]) for i in range(rank)])]
               for index, offset in enumerate(np.ndindex(*size))]
    return tf.add_n(windows)[..., tf.newaxis]


def _diagonal_sum(maps: tf.Tensor, start: Any, count: Any, block: Any) -> tf.Tensor:
    """``sum_r maps[:, r, (start + r) * block : (start + r + count) * block]``: ``[m, R, n * block]`` ->
    ``[m, count * block]``.

    Map ``r`` shifted by ``r`` blocks, by one reshape: the maps laid end to end with ``block``
    more values each (``R * block`` zeros at the end) line every map's shifted window up at the
    same place. Needs ``start + R - 1 + count <= n`` (a padded map and a kernel's rows).
    """
    n_maps = int(maps.shape[1])
    shape = tf.shape(maps)
    flat = tf.pad(tf.reshape(maps, tf.stack([shape[0], -1])), tf.stack([[0, 0], [0, n_maps * block]]))
    skewed = tf.reshape(flat, tf.stack([shape[0], n_maps, shape[2] + block]))  # [m, R, n * block + block]
    return tf.reduce_sum(skewed, axis=1)[:, start * block : (start + count) * block]


def _shifted_sum(maps: tf.Tensor, size: Sequence[int], paddings: Sequence[Sequence[Any]], *,
                 first_row: Any = 0) -> tf.Tensor:
    """Per-tap maps -> their sum, each shifted by its tap's offset, after zero padding: ``[batch, *out, 1]``.

    Args:
        maps: 1-D kernels: ``[batch, taps, length]`` (all taps); 2-D: ``[batch, height, taps, width]``,
            the taps of whole kernel rows ``first_row, first_row + 1, ...`` in row-major order.
        size: The kernel's spatial size (the output is the padded maps' size minus ``size - 1``).
        paddings: ``[[0, 0], [before, after] per spatial axis, [0, 0]]``.
        first_row: The kernel row of the first map (2-D; an int or an int32 scalar tensor).

    Returns:
        ``sum_t pad(maps_t)[offset_t : offset_t + out]`` with a trailing channel axis.
    """
    if len(size) == 1:
        padded = tf.pad(maps, [[0, 0], [0, 0], paddings[1]])  # [batch, k, length']
        out = tf.shape(padded)[2] - size[0] + 1
        return _diagonal_sum(padded, 0, out, 1)[..., tf.newaxis]
    height, row = size
    shape = tf.shape(maps)
    n_rows = int(maps.shape[2]) // row
    padded = tf.pad(maps, [[0, 0], [0, 0], [0, 0], paddings[2]])  # [batch, h, rows * row, w']
    width = tf.shape(padded)[3] - row + 1
    # along the rows: [batch * h * rows, row, w'] -> [batch, h, rows, width]
    rowsum = _diagonal_sum(tf.reshape(padded, tf.stack([-1, row, tf.shape(padded)[3]])), 0, width, 1)
    rowsum = tf.transpose(tf.reshape(rowsum, tf.stack([shape[0], shape[1], n_rows, width])), [0, 2, 1, 3])
    rowsum = tf.pad(rowsum, [[0, 0], [0, 0], paddings[1], [0, 0]])  # [batch, rows, h', width]
    out = tf.shape(rowsum)[2] - height + 1
    # across the rows: row r shifted by first_row + r lines of `width` values
    summed = _diagonal_sum(tf.reshape(rowsum, tf.stack([shape[0], n_rows, -1])), first_row, out, width)
    return tf.reshape(summed, tf.stack([shape[0], out, width, 1]))


def _unpooled_single_output_correlation(cot: _Unpooled, kernel: tf.Tensor, pads: list[list[int]],
                                        ctx: _Context) -> tf.Tensor:
    """Unpooling followed by a stride-1 one-output-channel correlation, without the unpooled map.

    The walk's last step, on the largest maps. Channel ``c`` of the value at pooled position ``p``
    goes to window offset ``o = switches[p, c]`` and is then weighted by the kernel's taps, so the
    taps' maps at offset ``o`` are one product ``[taps, channels] x [channels, batch * k *
    positions]`` of the values whose switch is ``o`` (the others zeroed by a 0/1 mask shared by the
    ``k`` signals): a plain matrix product per offset, whose largest operand is the size of the
    signal itself. (A product per position with the switches folded into the weights,
    :func:`_folded_single_output_correlation`, reads the signal once instead of three times per
    offset, but its weights hold a value per pooled value and (phase, shift) pair -- 16 for a 2 x 2
    pool and 3 x 3 taps -- whatever the chunk of features: the walks take it instead when the
    weights are small beside the chunks, :meth:`DeconvNet._record_switches`.) These
    ``offsets * taps`` maps at the pooled resolution are then summed with their shifts: with valid
    pooling (the paper's CNN, musicnn's vgg taggers) directly, output phase by phase
    (:func:`_polyphase_tap_sum`); otherwise unpooled (summing overlapping windows) and summed with
    the taps' shifts. With the mask multiply
    (instead of a broadcasting ``tf.where``), the phase-by-phase sum and the depthwise first-layer
    walk of :func:`_one_channel_adjoint`, all five layers' 320 features of a 4-s clip deconvolved
    and auralised went from 3.37 to 2.17 s on a 2-core Xeon (``benchmarks/deconvolution.py``).

    Returns:
        ``[batch * k, *spatial_in, 1]``.
    """
    rank = len(cot.pool_size)
    channels = int(kernel.shape[-2])
    n_offsets = int(np.prod(cot.pool_size))
    size = [int(n) for n in kernel.shape[:-2]]
    taps = tf.reshape(kernel, [-1, channels])  # [taps, channels]
    if cot.scale is not None:
        taps = taps * cot.scale[tf.newaxis, :]
    pooled = tf.shape(cot.switches)[1:-1]
    positions = tf.reduce_prod(pooled)
    signals = tf.reshape(cot.value, tf.stack([ctx.batch, ctx.k, positions, channels]))
    switches = tf.reshape(cot.switches, tf.stack([ctx.batch, 1, positions, channels]))
    maps: list[tf.Tensor] = []  # per offset: [taps, batch * k, *pooled]
    for offset in range(n_offsets):
        # One offset after the other (each offset's mask and masked copy are as large as the signal),
        # a multiply by the broadcast 0/1 mask (a broadcasting tf.where was slower).
        with tf.control_dependencies(maps[-1:]):
            mask = tf.cast(tf.equal(switches, offset), signals.dtype)
        chosen = tf.reshape(signals * mask, [-1, channels])
        weighted = tf.matmul(taps, chosen, transpose_b=True)  # [taps, batch * k * positions]
        maps.append(tf.reshape(weighted, tf.concat([[-1, ctx.batch * ctx.k], pooled], axis=0)))
    spatial = [cot.spatial[i] for i in range(rank)]
    if cot.padding == "valid":
        return _polyphase_tap_sum(maps, cot.pool_size, cot.strides, size, pads, spatial)
    unpooled = _scatter([m[..., tf.newaxis] for m in maps], cot.pool_size, cot.strides, cot.padding, spatial,
                        lead=2)
    return _window_sum(unpooled[..., 0], size, [[0, 0], *pads, [0, 0]])


def _phase_terms(pool_size: Sequence[int], strides: Sequence[int], size: Sequence[int],
                 pads: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[tuple[int, int, tuple[int, ...]]]]:
    """Which taps' maps of an unpooled signal land on each output phase, and where (valid pooling).

    Tap ``d``'s map of the values whose switch is window offset ``o`` lands on the correlation's
    output phase ``r`` when ``r + d - before - o`` is a multiple of the stride, shifted by that
    multiple (in pooled steps); see :func:`_polyphase_tap_sum`.

    Returns:
        ``{phase: [(offset, tap, shift), ...]}``: offsets row-major over ``pool_size``, taps
        row-major over ``size``, phases row-major over ``strides``.
    """
    rank = len(pool_size)
    terms: dict[tuple[int, ...], list[tuple[int, int, tuple[int, ...]]]] = {}
    for phase in np.ndindex(*strides):
        terms[phase] = []
        for tap, d in enumerate(np.ndindex(*size)):
            for offset, o in enumerate(np.ndindex(*pool_size)):
                at = [phase[i] + d[i] - pads[i][0] - o[i] for i in range(rank)]  # stride * shift when it lands
                if all(a % st == 0 for a, st in zip(at, strides)):
                    terms[phase].append((offset, tap, tuple(a // st for a, st in zip(at, strides))))
    return terms


def _sum_phases(maps: tf.Tensor, terms: Mapping[tuple[int, ...], Sequence[tuple[int, tuple[int, ...]]]],
                strides: Sequence[int], out: Sequence[Any]) -> tf.Tensor:
    """Pooled-resolution maps summed per output phase with their shifts, the phases interleaved.

    Args:
        maps: ``[m, n, *pooled]``.
        terms: ``{phase: [(map, shift), ...]}`` for every phase (row-major over ``strides``):
            output position ``stride * j + phase`` takes ``maps[map][:, j + shift]`` (zero outside).
        strides: The pooling's strides.
        out: The output's spatial sizes (ints or int32 scalars).

    Returns:
        ``[n, *out, 1]``.
    """
    rank = len(strides)
    pooled = tf.shape(maps)[2:]
    blocks = [(out[i] + strides[i] - 1) // strides[i] for i in range(rank)]  # output positions per phase
    shifts = [shift for found in terms.values() for _, shift in found]
    lowest = [min([0, *[shift[i] for shift in shifts]]) for i in range(rank)]
    highest = [max([0, *[shift[i] for shift in shifts]]) for i in range(rank)]
    # Zeros around the pooled maps cover every shifted window (and the input's rows no window covered).
    padded = tf.pad(maps, [[0, 0], [0, 0], *[[-lowest[i], tf.maximum(0, blocks[i] + highest[i] - pooled[i])]
                                             for i in range(rank)]])  # [m, n, *padded]
    n = tf.shape(maps)[1]
    phases = []
    for phase in np.ndindex(*strides):
        windows = [padded[(index, slice(None),
                           *[slice(shift[i] - lowest[i], shift[i] - lowest[i] + blocks[i]) for i in range(rank)])]
                   for index, shift in terms[phase]]
        phases.append(tf.add_n(windows) if windows else tf.zeros(tf.stack([n, *blocks]), maps.dtype))
    grid = tf.reshape(tf.stack(phases, axis=-1), tf.concat([[n], tf.stack(blocks), list(strides)], axis=0))
    order = [0, *[j for i in range(rank) for j in (1 + i, 1 + rank + i)]]  # [n, block_1, phase_1, ...]
    interleaved = tf.reshape(tf.transpose(grid, order), tf.stack([n, *[blocks[i] * strides[i] for i in range(rank)]]))
    return interleaved[(slice(None), *[slice(0, out[i]) for i in range(rank)])][..., tf.newaxis]


def _polyphase_tap_sum(maps: Sequence[tf.Tensor], pool_size: Sequence[int], strides: Sequence[int],
                       size: Sequence[int], pads: Sequence[Sequence[int]], spatial: Sequence[Any]) -> tf.Tensor:
    """The taps' maps of an unpooled signal summed with their shifts, at the pooled resolution.

    With valid padding, ``maps[o][t]`` is tap ``t``'s map of the values whose switch is window
    offset ``o``; unpooled, it sits at positions ``stride * i + o`` (summed where windows
    overlap). The correlation's output at ``stride * j + r`` (output phase ``r``) is the sum over
    taps ``d`` of the unpooled map at ``stride * j + r + d - before``: the terms of the offsets
    ``o`` with ``r + d - before - o`` a multiple of the stride, each ``maps[o][d]`` at pooled
    position ``j + (r + d - before - o) // stride`` (:func:`_phase_terms`). Per phase that is one
    shifted window of a pooled map per such (tap, offset) pair, and the phases are then
    interleaved (:func:`_sum_phases`): the pooled maps are read instead of the unpooled ones being
    written and read again (``_window_sum(_scatter(...))``).

    Args:
        maps: Per window offset (row-major over ``pool_size``): ``[taps, n, *pooled]``, the taps
            row-major over ``size``.
        pool_size: The pooling's window.
        strides: The pooling's strides (valid padding).
        size: The kernel's spatial size.
        pads: ``[before, after]`` zero padding of the correlation's input per spatial axis.
        spatial: The pooling input's spatial sizes (ints or int32 scalars).

    Returns:
        ``[n, *out, 1]``, ``out = spatial + before + after - size + 1``: as
        ``_window_sum(_scatter(maps...), size, pads)``.
    """
    rank = len(pool_size)
    n_taps = int(np.prod(size))
    out = [spatial[i] + pads[i][0] + pads[i][1] - size[i] + 1 for i in range(rank)]
    stacked = tf.stack(maps)  # [offsets, taps, n, *pooled]
    stacked = tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], axis=0))  # [offsets * taps, n, *pooled]
    terms = {phase: [(offset * n_taps + tap, shift) for offset, tap, shift in found]
             for phase, found in _phase_terms(pool_size, strides, size, pads).items()}
    return _sum_phases(stacked, terms, strides, out)


def _folded_keys(pool_size: Sequence[int], strides: Sequence[int], size: Sequence[int],
                 pads: Sequence[Sequence[int]]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (output phase, pooled shift) pairs of :func:`_phase_terms`, in a fixed order."""
    return sorted({(phase, shift) for phase, found in _phase_terms(pool_size, strides, size, pads).items()
                   for _, _, shift in found})


def _folded_weights(switches: tf.Tensor, kernel: tf.Tensor, pool_size: Sequence[int], strides: Sequence[int],
                    pads: Sequence[Sequence[int]]) -> tf.Tensor:
    """Per pooled position and channel, the weights that take an unpooled signal to the output phases.

    A value at pooled position ``p``, channel ``c`` goes to window offset ``o = switches[p, c]``
    and then, through tap ``d`` of the one-output-channel correlation, to output phase ``r`` at
    pooled shift ``s`` (:func:`_phase_terms`). Gathering the taps ``kernel[d, c]`` of each (phase,
    shift) pair ``m`` by offset gives ``G[p, c, m]``: the whole step is then one product per
    pooled position, ``signal[p] (k x c) @ G[p] (c x m)``, and the shifted sum of the ``m`` maps
    per phase (:func:`_folded_single_output_correlation`). ``G`` depends on the forward pass
    only, so it is made once for every chunk of features (:meth:`DeconvNet._record_switches`).

    Args:
        switches: int32 ``[batch, *pooled, channels]`` (valid pooling).
        kernel: The adjoint kernel ``[*size, channels, 1]``.
        pool_size: The pooling's window.
        strides: The pooling's strides.
        pads: ``[before, after]`` zero padding of the correlation's input per spatial axis.

    Returns:
        ``[batch, *pooled, channels, m]``, ``m`` = ``len(_folded_keys(...))``.
    """
    rank = len(pool_size)
    size = [int(n) for n in kernel.shape[:rank]]
    channels = int(kernel.shape[-2])
    n_offsets = int(np.prod(pool_size))
    keys = _folded_keys(pool_size, strides, size, pads)
    where = {key: m for m, key in enumerate(keys)}
    pick = np.zeros((n_offsets, int(np.prod(size)), len(keys)), np.float32)  # which tap of which offset -> m
    for phase, found in _phase_terms(pool_size, strides, size, pads).items():
        for offset, tap, shift in found:
            pick[offset, tap, where[(phase, shift)]] = 1.0
    taps = tf.reshape(kernel, [-1, channels])  # [taps, channels]
    table = tf.einsum("otm,tc->ocm", tf.constant(pick, kernel.dtype), taps)  # [offsets, channels, m]
    index = switches * channels + tf.range(channels)  # row of (offset, channel)
    return tf.gather(tf.reshape(table, [n_offsets * channels, len(keys)]), index)


def _folded_single_output_correlation(cot: _Unpooled, kernel: tf.Tensor, pads: list[list[int]],
                                      ctx: _Context) -> tf.Tensor:
    """:func:`_unpooled_single_output_correlation` with the switches folded into the weights.

    One product per pooled position with :func:`_folded_weights` (``cot.folded``, made once per
    forward pass) instead of a masked copy of the signal and a product per window offset: the
    signal is read once (and transposed once), then the ``m`` phase maps at the pooled
    resolution are summed with their shifts (:func:`_sum_phases`). With it, all five layers' 320
    features of a 4-s clip in the paper's CNN were deconvolved and auralised in 1.79 s instead of
    2.17 on a 2-core Xeon (``benchmarks/deconvolution.py``), the vgg tagger's 640 features of a 3-s
    patch in 3.83 s instead of 5.73 (``benchmarks/deconvnet_mtt_vgg.py``).

    Returns:
        ``[batch * k, *spatial_in, 1]``.
    """
    rank = len(cot.pool_size)
    channels = int(kernel.shape[-2])
    size = [int(n) for n in kernel.shape[:rank]]
    keys = _folded_keys(cot.pool_size, cot.strides, size, pads)
    weights = cot.folded[0]  # [batch, *pooled, channels, m]
    pooled = tf.shape(cot.switches)[1:-1]
    positions = tf.reduce_prod(pooled)
    signals = ctx.split(cot.value)
    if cot.scale is not None:
        signals = signals * cot.scale
    signals = tf.transpose(tf.reshape(signals, tf.stack([ctx.batch, ctx.k, positions, channels])), [0, 2, 1, 3])
    weights = tf.reshape(weights, tf.stack([ctx.batch, positions, channels, len(keys)]))
    maps = tf.matmul(signals, weights)  # [batch, positions, k, m]
    maps = tf.reshape(tf.transpose(maps, [3, 0, 2, 1]), tf.concat([[len(keys), ctx.batch * ctx.k], pooled], axis=0))
    spatial = [cot.spatial[i] for i in range(rank)]
    out = [spatial[i] + pads[i][0] + pads[i][1] - size[i] + 1 for i in range(rank)]
    where = {key: m for m, key in enumerate(keys)}
    terms = {phase: [(where[(phase, shift)], shift) for shift in sorted({sh for _, _, sh in found})]
             for phase, found in _phase_terms(cot.pool_size, cot.strides, size, pads).items()}
    return _sum_phases(maps, terms, cot.strides, out)


# --------------------------------------------------------------------------- feature chunks (bounded memory)

#: Default bound of one chunk of the walk: its largest tensor (``batch × features ×`` the model's
#: largest activation per input element, :func:`walk_expansion`) has at most this many float32
#: elements (32 Mi = 128 MiB). The walk holds about three such tensors at a time (and, for a 2D CNN's
#: first layer, weights with the switches folded in when they fit in half of one: :func:`_folded_weights`).
DEFAULT_CHUNK_ELEMENTS = 32 * 2**20


def walk_expansion(model: keras.Model) -> float:
    """The model's largest activation per element of its input: ``max_l size(layer l) / size(input)``.

    The deconvolution of one feature holds tensors of that many elements per input element
    (its walk passes back through every activation shape of the model). Computed from the
    Keras model's static shapes; layers with unknown sizes are skipped, and a model without a
    static input size counts its widest layer's channels.

    Returns:
        A float ``>= 1`` (e.g. ``n_filters`` for the Choi CNN: 64 maps of the input's size).
    """
    def size(shape: Any) -> int | None:
        dims = list(shape)[1:]
        return None if any(d is None for d in dims) else int(np.prod(dims)) if dims else 1

    def layers(outer: keras.Model) -> Iterator[Any]:  # nested functional models' own layers too
        for layer in outer.layers:
            inner = _nested_functional(layer)
            yield from layers(inner) if inner is not None else (layer,)

    n_in = size(model.inputs[0].shape)
    widest = 1.0
    for layer in layers(model):
        try:
            outputs = tf.nest.flatten(layer.output)
        except (AttributeError, ValueError):
            continue
        for output in outputs:
            shape = getattr(output, "shape", None)
            if shape is None or len(shape) < 2:
                continue
            n_out = size(shape)
            if n_in and n_out is not None:
                widest = max(widest, n_out / n_in)
            elif shape[-1] is not None:
                widest = max(widest, float(shape[-1]))
    return widest


def features_per_chunk(x: tf.Tensor, *, expansion: float, chunk_elements: int) -> tf.Tensor:
    """How many features one chunk of the walk may hold: ``max(1, chunk_elements // (size(x) × expansion))``.

    Args:
        x: The deconvolution's input ``[batch, ...]`` (all of the batch goes down together).
        expansion: :func:`walk_expansion` of the model.
        chunk_elements: Most elements of the walk's largest tensor per chunk.

    Returns:
        int32 scalar ``>= 1``.
    """
    per_feature = tf.maximum(tf.cast(tf.size(x, out_type=tf.int64), tf.float64) * float(expansion), 1.0)
    fits = tf.floor(tf.constant(float(chunk_elements), tf.float64) / per_feature)
    return tf.cast(tf.clip_by_value(fits, 1.0, 2.0**30), tf.int32)


def _fits_in_one_chunk(features: tf.Tensor, chunk_size: Any) -> bool:
    """Whether :func:`map_feature_chunks` runs ``features`` without a loop (known statically)."""
    k = tf.get_static_value(tf.size(features))
    size = tf.get_static_value(tf.maximum(tf.cast(chunk_size, tf.int32), 1))
    return k is not None and size is not None and int(k) <= int(size)


@tf.autograph.experimental.do_not_convert
def map_feature_chunks(fn: Callable[[tf.Tensor], Any], features: tf.Tensor, chunk_size: Any, *,
                       dtypes: Any = tf.float32) -> Any:
    """``fn(features)``, computed on consecutive chunks of at most ``chunk_size`` features.

    The chunks run one after the other in an in-graph loop (``tf.while_loop`` with
    ``parallel_iterations=1``: one chunk's intermediate tensors are freed before the next
    starts) and their results are concatenated along axis 1 (the features axis). A request
    that fits in one chunk (known statically) runs without a loop.

    Args:
        fn: Maps int32 ``[kc]`` feature indices to a tensor (or tuple of tensors)
            ``[batch, kc, ...]``.
        features: int32 ``[k]``.
        chunk_size: Most features per chunk (int or int32 scalar tensor; at least 1 is used).
        dtypes: The dtype (or tuple of dtypes) of ``fn``'s results.

    Returns:
        What ``fn`` returns for all ``k`` features: ``[batch, k, ...]`` per result.
    """
    features = tf.convert_to_tensor(features, tf.int32)
    k = tf.size(features)
    size = tf.maximum(tf.cast(chunk_size, tf.int32), 1)
    if _fits_in_one_chunk(features, chunk_size):
        return fn(features)
    flat_dtypes = tf.nest.flatten(dtypes)
    n_chunks = (k + size - 1) // size

    shapes: list[tf.TensorShape] = []  # static shapes of fn's results (recorded while tracing the body)

    def swap(t: tf.Tensor, rank: int) -> tf.Tensor:  # [batch, kc, ...] <-> [kc, batch, ...]
        return tf.transpose(t, [1, 0, *range(2, rank)])

    def body(i: tf.Tensor, *arrays: tf.TensorArray) -> tuple[Any, ...]:
        results = tf.nest.flatten(fn(features[i * size : (i + 1) * size]))
        shapes[:] = [r.shape for r in results]
        return (i + 1, *[a.write(i, swap(r, r.shape.rank)) for a, r in zip(arrays, results)])

    arrays = [tf.TensorArray(dtype, size=n_chunks, infer_shape=False) for dtype in flat_dtypes]
    _, *arrays = tf.while_loop(lambda i, *_: i < n_chunks, body, (tf.constant(0), *arrays), parallel_iterations=1)
    results = []
    for array, shape in zip(arrays, shapes):
        joined = array.concat()  # [k, batch, ...]
        joined.set_shape(tf.TensorShape([None]).concatenate(shape[:1]).concatenate(shape[2:]))
        results.append(swap(joined, shape.rank))
    return tf.nest.pack_sequence_as(dtypes, results)


def feature_maxima(h: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    """Maximum activation of selected feature maps: ``[batch, *spatial, C]`` → ``[batch, k]``."""
    selected = tf.gather(h, features, axis=-1)
    spatial_axes = list(range(1, len(h.shape) - 1))
    return tf.reduce_max(selected, axis=spatial_axes) if spatial_axes else selected


def deconvolvable_layers(model: keras.Model) -> tuple[int, ...]:
    """The levels :func:`deconvolve` accepts for ``model``."""
    return DeconvNet(model).levels


def n_features(model: keras.Model, layer: int | str) -> int:
    """Number of feature maps of ``layer`` (a level or a layer name) of ``model``."""
    return DeconvNet(model).n_features(layer)


def deconvolve(
    model: keras.Model,
    x: tf.Tensor | np.ndarray,
    *,
    layer: int | str,
    features: Sequence[int] | tf.Tensor | None = None,
    method: str = "deconvnet",
    input_layer: str | None = None,
) -> tf.Tensor:
    """Zeiler–Fergus deconvolution of selected features of one layer (see the module docstring).

    Args:
        model: A Keras functional CNN (tfaural's own models included).
        x: Model input, e.g. ``[batch, freq, frames(, 1)]`` magnitude or ``[batch, samples(, 1)]`` waveform.
        layer: A level or a layer name.
        features: Feature indices; ``None`` deconvolves every map of the layer.
        method: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        input_layer: The layer whose output is the input domain (``None``: automatic).

    Returns:
        float32 ``[batch, n_features, *domain]`` (e.g. ``[batch, k, freq, frames]`` for 2D CNNs,
        ``[batch, k, samples]`` for waveform models).
    """
    result = DeconvNet(model, method=method, input_layer=input_layer)(x, layer=layer, features=features)
    assert isinstance(result, tf.Tensor)
    return result
