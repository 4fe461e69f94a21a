"""The explicit Zeiler–Fergus walk tfaural used before the general deconvnet (issue 16), frozen.

Kept only as a baseline: ``benchmarks/deconvolution.py`` times it side by side with
:class:`tfaural.deconv.DeconvNet`, and ``tests/deconv/test_deconvnet.py`` checks that the
general walk gives its maps on the Choi CNN and the SampleCNN family. It walks exactly the
layer pattern of tfaural's own models (conv → BN → ReLU → non-overlapping max-pool, STFT or
waveform input), block by block, with the features as a batch axis; see the library module
for everything else. Not part of the package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfaural.errors import ModelError, ParameterError
from tfaural.models import conv_blocks
from tfaural.models.layers import ConvBlock

__all__ = [
    "DeconvNet",
    "deconvolve",
    "deconvolvable_layers",
    "n_features",
    "feature_maxima",
    "pool_with_switches",
    "unpool",
]


def pool_with_switches(x: tf.Tensor, pool_size: Sequence[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Non-overlapping max pooling (stride = size, floor) that also returns its switches.

    Args:
        x: float ``[batch, *spatial, channels]`` with 1 or 2 spatial axes.
        pool_size: Window size per spatial axis.

    Returns:
        ``(pooled, switches)``: ``pooled`` is ``[batch, *spatial // pool_size, channels]``
        (equal to ``keras.layers.MaxPooling*D(padding="valid")``); ``switches`` is a 0/1
        float mask shaped like ``x`` with one 1 per pooling window, at the window's
        first maximum, and zeros on the rows/columns the floor left out.
    """
    rank = len(pool_size)
    shape = tf.shape(x)
    batch, channels = shape[0], shape[-1]
    spatial = [shape[1 + i] for i in range(rank)]
    pooled_sizes = [spatial[i] // pool_size[i] for i in range(rank)]
    covered = x[(slice(None), *[slice(0, pooled_sizes[i] * pool_size[i]) for i in range(rank)], slice(None))]
    # [batch, P1, p1, (P2, p2,) C] -> [batch, P1, (P2,) C, p1 (* p2)]
    split: list[Any] = [batch]
    for i in range(rank):
        split += [pooled_sizes[i], pool_size[i]]
    split.append(channels)
    windows = tf.reshape(covered, tf.stack(split))
    outer = [1 + 2 * i for i in range(rank)]
    inner = [2 + 2 * i for i in range(rank)]
    windows = tf.transpose(windows, [0, *outer, 2 * rank + 1, *inner])
    window_size = int(np.prod(pool_size))
    flat = tf.reshape(windows, tf.stack([batch, *pooled_sizes, channels, window_size]))
    pooled = tf.reduce_max(flat, axis=-1)
    onehot = tf.one_hot(tf.argmax(flat, axis=-1, output_type=tf.int32), window_size, dtype=x.dtype)
    onehot = tf.reshape(onehot, tf.stack([batch, *pooled_sizes, channels, *pool_size]))
    back = [0]
    for i in range(rank):
        back += [1 + i, rank + 2 + i]
    back.append(rank + 1)
    mask = tf.reshape(tf.transpose(onehot, back), tf.shape(covered))
    paddings = [[0, 0]] + [[0, spatial[i] - pooled_sizes[i] * pool_size[i]] for i in range(rank)] + [[0, 0]]
    return pooled, tf.pad(mask, paddings)


def unpool(y: tf.Tensor, switches: tf.Tensor, pool_size: Sequence[int]) -> tf.Tensor:
    """Places each pooled value at its window's recorded argmax (zeros elsewhere).

    Args:
        y: ``[batch, n_features, *pooled_spatial, channels]``: signals to unpool,
            several per input.
        switches: ``[batch, *spatial, channels]`` from :func:`pool_with_switches`.
        pool_size: Window size per spatial axis.

    Returns:
        ``[batch, n_features, *spatial, channels]`` (odd leftovers zero-padded).
    """
    covered, paddings = _unpool_covered(y, switches, pool_size)
    return tf.pad(covered, paddings)


def _unpool_covered(
    y: tf.Tensor, switches: tf.Tensor, pool_size: Sequence[int]
) -> tuple[tf.Tensor, list[list[tf.Tensor]]]:
    """Unpools onto the region the pooling windows covered; returns it and the padding to full size."""
    rank = len(pool_size)
    shape = tf.shape(y)
    # One broadcast materialises the nearest-neighbour upsampling ([.., P, 1, Q, 1, ..] -> [.., P, p, Q, q, ..]).
    expanded = [shape[0], shape[1]]
    broadcast = [shape[0], shape[1]]
    covered_shape = [shape[0], shape[1]]
    for i in range(rank):
        expanded += [shape[2 + i], 1]
        broadcast += [shape[2 + i], pool_size[i]]
        covered_shape.append(shape[2 + i] * pool_size[i])
    expanded.append(shape[-1])
    broadcast.append(shape[-1])
    covered_shape.append(shape[-1])
    up = tf.reshape(tf.broadcast_to(tf.reshape(y, tf.stack(expanded)), tf.stack(broadcast)), tf.stack(covered_shape))
    target = tf.shape(switches)
    mask = switches[(slice(None), *[slice(0, covered_shape[2 + i]) for i in range(rank)], slice(None))]
    paddings = [[0, 0], [0, 0]] + [[0, target[1 + i] - covered_shape[2 + i]] for i in range(rank)] + [[0, 0]]
    return up * mask[:, tf.newaxis], paddings


@dataclasses.dataclass(frozen=True)
class _Block:
    """The tensors of one conv block needed for both directions."""

    level: int
    conv: keras.layers.Layer
    batch_norm: keras.layers.Layer | None
    pool_size: tuple[int, ...] | None


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * rank
    return tuple(int(v) for v in value)


class DeconvNet:
    """The deconvolution network of one trained model (weights shared, nothing copied).

    Args:
        model: A Choi CNN or a SampleCNN-family model from :mod:`tfaural.models`.

    Raises:
        ModelError: If the model has no conv blocks or uses a layer the walk cannot invert.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        names = conv_blocks(model)
        self.blocks: list[_Block] = [self._block(model, block) for block in names]
        first_conv = names[0].conv
        layer_names = [layer.name for layer in model.layers]
        self.front_end = [model.get_layer(n) for n in layer_names[1 : layer_names.index(first_conv)]]
        self.rank = len(self.blocks[0].conv.kernel.shape) - 2
        self.levels = tuple(b.level for b in self.blocks)
        self.crop = 0
        for layer in self.front_end:
            if isinstance(layer, keras.layers.ZeroPadding1D):
                left, right = _tuple(layer.padding, 2)
                if left:
                    raise ModelError(f"layer {layer.name!r}: left padding is not supported by the deconvolution")
                self.crop += right

    @staticmethod
    def _block(model: keras.Model, names: ConvBlock) -> _Block:
        conv = model.get_layer(names.conv)
        rank = len(conv.kernel.shape) - 2
        if _tuple(conv.dilation_rate, rank) != (1,) * rank:
            raise ModelError(f"layer {conv.name!r}: dilated convolutions are not supported")
        pool_size = None
        if names.pool is not None:
            pool = model.get_layer(names.pool)
            pool_size = _tuple(pool.pool_size, rank)
            if _tuple(pool.strides, rank) != pool_size or pool.padding != "valid":
                raise ModelError(f"layer {pool.name!r}: only non-overlapping 'valid' max pooling can be unpooled")
        bn = model.get_layer(names.batch_norm) if names.batch_norm else None
        return _Block(names.level, conv, bn, pool_size)

    def n_features(self, layer: int) -> int:
        """Number of feature maps of block ``layer``."""
        return int(self._blocks_to(layer)[-1].conv.kernel.shape[-1])

    def _blocks_to(self, layer: int) -> list[_Block]:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer not in self.levels:
            raise ParameterError(
                f"layer={layer!r} is invalid for model {self.model.name!r}: expected one of {list(self.levels)}"
            )
        return [b for b in self.blocks if b.level <= layer]

    def input_space(self, x: tf.Tensor) -> tf.Tensor:
        """Applies the layers before the first convolution (scaling, log-mel, padding)."""
        x = tf.convert_to_tensor(x, tf.float32)
        if self.rank == 2 and x.shape.rank == 3:
            x = x[..., tf.newaxis]  # [batch, freq, frames] -> channels-last
        if self.rank == 1 and x.shape.rank == 2:
            x = x[..., tf.newaxis]  # [batch, samples] -> [batch, samples, 1]
        for layer in self.front_end:
            x = layer(x, training=False)
        return x

    def _forward_block(self, block: _Block, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        x = block.conv(x)
        if block.batch_norm is not None:
            x = block.batch_norm(x, training=False)
        x = tf.nn.relu(x)
        if block.pool_size is None:
            return x, None
        return pool_with_switches(x, block.pool_size)

    def _transposed_kernel(self, block: _Block) -> tf.Tensor:
        kernel = tf.convert_to_tensor(block.conv.kernel)
        bn = block.batch_norm
        if bn is None:
            return kernel
        scale = tf.math.rsqrt(tf.convert_to_tensor(bn.moving_variance) + bn.epsilon)
        if bn.scale:
            scale = scale * tf.convert_to_tensor(bn.gamma)
        return kernel * scale  # scales the output-channel axis (last)

    def _transpose_conv(
        self,
        block: _Block,
        y: tf.Tensor,
        input_shape: tf.Tensor,
        *,
        extra_padding: list[list[tf.Tensor]] | None = None,
    ) -> tf.Tensor:
        """The adjoint of ``block``'s convolution (no bias), mapping ``y`` back to ``input_shape``.

        ``extra_padding`` (``[[0, n]]`` per spatial axis) zero-pads ``y`` on the right first;
        the fast path folds it into the convolution's own padding instead of copying ``y``.
        """
        conv = block.conv
        strides = _tuple(conv.strides, self.rank)
        kernel_size = tuple(int(k) for k in conv.kernel.shape[: self.rank])
        if self._stride1_same(block):
            # A forward convolution runs ~1.5x faster than conv_transpose on CPU (oneDNN).
            kernel = self._adjoint_kernel(block)
            half = [n // 2 for n in kernel_size]
            extra = [0] * self.rank if extra_padding is None else [p[1] for p in extra_padding]
            explicit = [[0, 0]] + [[half[i], half[i] + extra[i]] for i in range(self.rank)] + [[0, 0]]
            if int(kernel.shape[-1]) == 1:
                return _single_output_convolution(y, kernel, explicit)
            if extra_padding is None:
                return tf.nn.convolution(y, kernel, padding="SAME")
            static = tf.get_static_value(tf.convert_to_tensor(explicit))
            if self.rank == 2 and static is not None:  # conv2d takes explicit padding only as Python ints
                return tf.nn.conv2d(y, kernel, strides=1, padding=static.tolist())
            return tf.nn.convolution(tf.pad(y, explicit), kernel, padding="VALID")
        if extra_padding is not None:
            y = tf.pad(y, [[0, 0], *extra_padding, [0, 0]])
        return tf.nn.conv_transpose(
            y,
            self._transposed_kernel(block),
            output_shape=input_shape,
            strides=list(strides),
            padding=conv.padding.upper(),
        )

    def __call__(
        self,
        x: tf.Tensor,
        *,
        layer: int,
        features: Sequence[int] | tf.Tensor | None = None,
        return_activation: bool = False,
    ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        """Deconvolves ``features`` of block ``layer`` for every input of the batch.

        Args:
            x: The model's input: STFT magnitude ``[batch, freq, frames(, 1)]`` for the
                Choi CNN, waveform ``[batch, samples(, 1)]`` for the SampleCNN family.
                Any size at least one receptive field (the conv part is size-agnostic).
            layer: Block level (Choi: 1-5; SampleCNN: 0 = strided front conv, 1..N the
                modules, N + 1 the 1x1 conv).
            features: Feature indices (int list or int32 tensor ``[k]``); ``None``: all.
            return_activation: Also return each selected feature map's maximum
                activation, float32 ``[batch, k]`` (the feature's response strength).

        Returns:
            The deconvolved maps in the input space (see the module docstring for
            shapes), and with ``return_activation`` the activations as well.

        Raises:
            ParameterError: Invalid ``layer`` or out-of-range feature indices.
        """
        blocks = self._blocks_to(layer)
        n_maps = int(blocks[-1].conv.kernel.shape[-1])
        feats = self._features(features, n_maps)
        h = self.input_space(x)
        shapes, switches = [], []
        for block in blocks:
            shapes.append(tf.shape(h))
            h, sw = self._forward_block(block, h)
            switches.append(sw)
        deconvolved = self._walk_down(h, feats, n_maps, blocks, shapes, switches)
        if not return_activation:
            return deconvolved
        return deconvolved, feature_maxima(h, feats)

    def deconvolve_layers(
        self,
        x: tf.Tensor,
        *,
        layers: Sequence[int] | None = None,
        features: Sequence[int] | tf.Tensor | None = None,
    ) -> dict[int, tf.Tensor]:
        """Deconvolves several layers with one shared forward pass (see :meth:`__call__`).

        Args:
            x: The model's input.
            layers: Block levels (``None``: all).
            features: Feature indices for every layer (``None``: all maps of each layer).

        Returns:
            ``{layer: deconvolved}``. The layers are computed one after another (each
            walk already uses every core; running them concurrently only thrashes caches).
            The features' maximum activations of the same call are left in
            ``self.last_activations`` (``{layer: [batch, k]}``).
        """
        wanted = list(self.levels if layers is None else layers)
        deepest = max(wanted)
        blocks = self._blocks_to(deepest)
        for layer in wanted:
            self._blocks_to(layer)
        h = self.input_space(x)
        shapes, switches, outputs = [], [], []
        for block in blocks:
            shapes.append(tf.shape(h))
            h, sw = self._forward_block(block, h)
            switches.append(sw)
            outputs.append(h)
        result: dict[int, tf.Tensor] = {}
        self.last_activations: dict[int, tf.Tensor] = {}
        previous: tf.Tensor | None = None
        for layer in wanted:
            index = [b.level for b in blocks].index(layer)
            top = outputs[index]
            if previous is not None:
                with tf.control_dependencies([previous]):
                    top = tf.identity(top)
            n_maps = int(blocks[index].conv.kernel.shape[-1])
            feats = self._features(features, n_maps)
            previous = self._walk_down(top, feats, n_maps, blocks[: index + 1], shapes[: index + 1],
                                       switches[: index + 1])
            result[layer] = previous
            self.last_activations[layer] = feature_maxima(outputs[index], feats)
        return result

    def _walk_down(
        self,
        h: tf.Tensor,
        feats: tf.Tensor,
        n_maps: int,
        blocks: Sequence[_Block],
        shapes: Sequence[tf.Tensor],
        switches: Sequence[tf.Tensor | None],
    ) -> tf.Tensor:
        top = blocks[-1]
        if self._stride1_same(top):
            y = self._top_step(h, feats, top, shapes[-1], switches[-1])
            blocks, shapes, switches = blocks[:-1], shapes[:-1], switches[:-1]
        else:
            selected = tf.gather(h, feats, axis=-1)  # [batch, *spatial, k]
            perm = [0, self.rank + 1, *range(1, self.rank + 1)]
            selected = tf.transpose(selected, perm)[..., tf.newaxis]
            onehot = tf.reshape(tf.one_hot(feats, n_maps, dtype=h.dtype),
                                tf.stack([1, -1, *[1] * self.rank, n_maps]))
            y = selected * onehot
        batch = tf.shape(y)[0]
        k = tf.shape(y)[1]
        for block, shape, sw in zip(reversed(blocks), reversed(shapes), reversed(switches)):
            # ReLU commutes with unpooling (which only moves values and inserts zeros), so it
            # runs on the 2**rank times smaller pooled map.
            y = tf.nn.relu(y)
            extra: list[list[tf.Tensor]] | None = None
            if sw is not None:
                y, paddings = _unpool_covered(y, sw, block.pool_size)  # type: ignore[arg-type]
                extra = paddings[2:-1]
            flat = tf.reshape(y, tf.concat([[batch * k], tf.shape(y)[2:]], axis=0))
            out_shape = tf.concat([[batch * k], shape[1:]], axis=0)
            flat = self._transpose_conv(block, flat, out_shape, extra_padding=extra)
            y = tf.reshape(flat, tf.concat([[batch, k], shape[1:]], axis=0))
        return self._to_output_layout(y)

    def _adjoint_kernel(self, block: _Block) -> tf.Tensor:
        """``[*kernel, channels_out, channels_in]``: the adjoint of a stride-1 "same" convolution with
        an odd kernel is the same convolution with the kernel flipped in space and its channel axes swapped."""
        kernel = tf.reverse(self._transposed_kernel(block), axis=list(range(self.rank)))
        return tf.transpose(kernel, [*range(self.rank), self.rank + 1, self.rank])

    def _stride1_same(self, block: _Block) -> bool:
        conv = block.conv
        kernel_size = tuple(int(k) for k in conv.kernel.shape[: self.rank])
        return (_tuple(conv.strides, self.rank) == (1,) * self.rank and all(n % 2 for n in kernel_size)
                and conv.padding == "same")

    def _top_step(
        self, h: tf.Tensor, feats: tf.Tensor, block: _Block, shape: tf.Tensor, sw: tf.Tensor | None
    ) -> tf.Tensor:
        """ReLU, unpooling and transposed convolution of the selected maps of the top block.

        Each selected feature is a single non-zero channel, so its transposed convolution
        needs only that channel's slice of the kernel: a depthwise convolution with the
        features as channels (channel multiplier = the block's input channels) instead of
        a full one on a one-hot tensor, ``n_maps`` times fewer operations.

        Returns:
            ``[batch, k, *spatial, channels_in]`` of the block's input.
        """
        y = tf.nn.relu(tf.gather(h, feats, axis=-1))  # [batch, *pooled, k]
        pad = [[0, 0]] * self.rank
        if sw is not None:
            covered, paddings = _unpool_covered(y[:, tf.newaxis], tf.gather(sw, feats, axis=-1),
                                                block.pool_size)  # type: ignore[arg-type]
            y, pad = covered[:, 0], paddings[2:-1]
        kernel_size = [int(n) for n in block.conv.kernel.shape[: self.rank]]
        kernel = tf.gather(self._adjoint_kernel(block), feats, axis=-2)  # [*kernel, k, channels_in]
        explicit = [[0, 0]] + [[n // 2, n // 2 + pad[i][1]] for i, n in enumerate(kernel_size)] + [[0, 0]]
        y = tf.pad(y, explicit)
        if self.rank == 1:
            y, kernel = y[:, tf.newaxis], kernel[tf.newaxis]
        out = tf.nn.depthwise_conv2d(y, kernel, strides=[1, 1, 1, 1], padding="VALID")
        if self.rank == 1:
            out = out[:, 0]
        channels_in = int(block.conv.kernel.shape[-2])
        k = tf.shape(feats)[0]
        out = tf.reshape(out, tf.concat([shape[:-1], [k, channels_in]], axis=0))  # [batch, *spatial, k, c_in]
        return tf.transpose(out, [0, self.rank + 1, *range(1, self.rank + 1), self.rank + 2])

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
        return tf.constant(values, tf.int32)

    def _to_output_layout(self, y: tf.Tensor) -> tf.Tensor:
        if self.rank == 2:
            return y[..., 0]  # [batch, k, freq, frames]
        if self.crop:
            y = y[:, :, : tf.shape(y)[2] - self.crop]
        if y.shape[-1] == 1:
            return y[..., 0]  # [batch, k, samples]
        return tf.transpose(y, [0, 1, 3, 2])  # [batch, k, mels, frames]


def _single_output_convolution(y: tf.Tensor, kernel: tf.Tensor, paddings: Sequence[Sequence[Any]]) -> tf.Tensor:
    """A stride-1 convolution with one output channel, as a matrix product and shifted sums.

    oneDNN runs a many-to-one-channel convolution far below the machine's rate (~20 GFLOP/s in a
    profile on the 2-core development machine; it is the walk's last step, 64 channels -> the
    spectrogram, on the largest maps); one
    ``[positions, channels] x [channels, taps]`` product reads the input once, and the taps
    are then summed with shifts on the small one-channel maps.

    Args:
        y: ``[batch, *spatial, channels]``.
        kernel: ``[*kernel, channels, 1]`` (cross-correlation, as ``tf.nn.convolution``).
        paddings: ``[[0, 0], [before, after] per spatial axis, [0, 0]]`` applied to the input.

    Returns:
        ``[batch, *out_spatial, 1]`` equal to ``tf.nn.convolution(tf.pad(y, paddings), kernel, "VALID")``.
    """
    rank = len(kernel.shape) - 2
    size = [int(n) for n in kernel.shape[:rank]]
    taps = tf.reshape(kernel, [-1, tf.shape(kernel)[-2]])  # [taps, channels], taps in row-major kernel order
    flat = tf.reshape(y, [-1, tf.shape(y)[-1]])  # [positions, channels]
    weighted = tf.matmul(taps, flat, transpose_b=True)  # [taps, positions]: each tap's map is contiguous
    weighted = tf.reshape(weighted, tf.concat([[-1], tf.shape(y)[:-1]], axis=0))  # [taps, batch, *spatial]
    weighted = tf.pad(weighted, [[0, 0], *paddings[:-1]])
    shape = tf.shape(weighted)
    out_sizes = [shape[2 + i] - size[i] + 1 for i in range(rank)]
    windows = [weighted[(index, slice(None), *[slice(offset[i], offset[i] + out_sizes[i]) for i in range(rank)])]
               for index, offset in enumerate(np.ndindex(*size))]
    return tf.add_n(windows)[..., tf.newaxis]


def feature_maxima(h: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    """Maximum activation of selected feature maps: ``[batch, *spatial, C]`` → ``[batch, k]``."""
    selected = tf.gather(h, features, axis=-1)
    spatial_axes = list(range(1, len(h.shape) - 1))
    return tf.reduce_max(selected, axis=spatial_axes) if spatial_axes else selected


def deconvolvable_layers(model: keras.Model) -> tuple[int, ...]:
    """The block levels :func:`deconvolve` accepts for ``model``."""
    return DeconvNet(model).levels


def n_features(model: keras.Model, layer: int) -> int:
    """Number of feature maps in block ``layer`` of ``model``."""
    return DeconvNet(model).n_features(layer)


def deconvolve(
    model: keras.Model,
    x: tf.Tensor | np.ndarray,
    *,
    layer: int,
    features: Sequence[int] | tf.Tensor | None = None,
) -> tf.Tensor:
    """Zeiler–Fergus deconvolution of selected features of one layer (see the module docstring).

    Args:
        model: A Choi CNN or SampleCNN-family model.
        x: Model input, ``[batch, freq, frames(, 1)]`` magnitude or ``[batch, samples(, 1)]`` waveform.
        layer: Block level to deconvolve.
        features: Feature indices; ``None`` deconvolves every map of the layer.

    Returns:
        float32 ``[batch, n_features, freq, frames]`` (2D) or ``[batch, n_features, samples]`` (1D).
    """
    result = DeconvNet(model)(x, layer=layer, features=features)
    assert isinstance(result, tf.Tensor)
    return result
