"""The 5-layer 2D STFT CNN of Choi, Fazekas & Sandler (2015), and its receptive fields.

Input: linear STFT magnitude ``[batch, n_freq, n_frames, 1]`` float32 (11,025 Hz,
512-point FFT, hop 256, 4 s => 257 x 173), channels-last. Layers, by stable name:

=====================  ==========================================================
``spectrogram``        the input
``input_scaling``      :class:`~tfaural.models.layers.InputScaling` ("linear"/"log")
``conv1`` .. ``conv5`` Conv2D 3x3, 64 maps, ``padding="same"``, no activation
``relu1`` .. ``relu5`` ReLU
``pool1`` .. ``pool5`` MaxPooling2D 2x2, stride 2, ``padding="valid"`` (floor)
``dropout1`` ..        Dropout 0.5
``flatten``            Flatten
``fc1``, ``fc2``       Dense + ReLU (widths ``fc_units``)
``fc1_dropout`` ..     Dropout 0.5
``output``             Dense, softmax (genre) or sigmoid (tags)
=====================  ==========================================================

With the default input the feature maps are 128x86, 64x43, 32x21, 16x10 and 8x5
(freq x frames) after ``pool1`` .. ``pool5``.

Receptive fields. The paper's Table 1 lists "effective sizes" of 93 ms x 86 Hz
(layer 1) up to 1137 ms x 1270 Hz (layer 5). Its time values are
``3 * 2**(L - 1) + 1`` hops (4, 7, 13, 25, 49) and its frequency values the
same numbers of bins (4, 7, 13, 25) for layers 1-4 -- both converted with
rounded unit sizes of 23.2 ms per hop and 21.5 Hz per bin. Layer 5's 1270 Hz
does NOT follow the pattern: 49 bins are 1055 Hz (59 bins would be 1270 Hz), so
that entry is an inconsistency of the paper. :func:`paper_effective_sizes`
reproduces the paper's convention (with exact unit sizes);
:func:`receptive_fields` gives the true receptive field by the standard
recursion ``r_out = r_in + (k - 1) * j_in``, ``j_out = j_in * stride`` (after
``pool5``: 94 frames = 2183 ms and 94 bins = 2024 Hz).
"""

from __future__ import annotations

import dataclasses

import keras

from tfaural.config import ChoiConfig
from tfaural.models.layers import ConvBlock, InputScaling, TfauralModel

__all__ = [
    "choi_cnn",
    "build_choi",
    "block_names",
    "ReceptiveField",
    "receptive_fields",
    "paper_effective_sizes",
    "PAPER_TABLE1",
    "INPUT_NAME",
]

INPUT_NAME = "spectrogram"

#: Table 1 of Choi et al. (2015): (effective width in ms, effective height in Hz) per layer.
PAPER_TABLE1: tuple[tuple[int, int], ...] = ((93, 86), (162, 151), (302, 280), (580, 538), (1137, 1270))


def choi_cnn(
    *,
    n_outputs: int,
    n_freq: int = 257,
    n_frames: int = 173,
    n_layers: int = 5,
    n_filters: int = 64,
    kernel_size: int = 3,
    pool_size: int = 2,
    dropout: float = 0.5,
    fc_units: tuple[int, ...] = (256, 256),
    output_activation: str = "softmax",
    input_scaling: str = "linear",
    log_c: float = 10.0,
    sample_rate: int = 11025,
    n_fft: int = 512,
    hop_length: int = 256,
    name: str | None = None,
) -> TfauralModel:
    """Builds the auralisation paper's CNN (see the module docstring for layer names).

    Args:
        n_outputs: Output units (3 genres in the paper).
        n_freq: Frequency bins of the input, ``n_fft // 2 + 1``.
        n_frames: Frames of the input.
        n_layers: Conv blocks.
        n_filters: Feature maps per conv layer.
        kernel_size: Square conv kernel size.
        pool_size: Square max-pooling size (= stride).
        dropout: Dropout rate after every block and fully connected layer.
        fc_units: Widths of the fully connected layers ``fc1, fc2, ...``.
        output_activation: ``"softmax"`` (single-label), ``"sigmoid"`` (multi-label) or ``"linear"``.
        input_scaling: ``"linear"`` magnitude (as the reference code) or ``"log"``: ``log(1 + log_c |x|)``.
        log_c: Compression constant of the log scaling.
        sample_rate: Sample rate in Hz of the audio the STFT came from.
        n_fft: FFT size in samples.
        hop_length: STFT hop in samples.
        name: Model name (default ``"choi_cnn"``).

    Returns:
        A :class:`~tfaural.models.layers.TfauralModel` mapping ``[batch, n_freq, n_frames, 1]``
        magnitudes to ``[batch, n_outputs]``; ``model.tfaural_config`` is its :class:`ChoiConfig`.

    Raises:
        ConfigError: If an argument is out of range.
    """
    config = ChoiConfig(
        n_outputs=n_outputs, n_freq=n_freq, n_frames=n_frames, n_layers=n_layers, n_filters=n_filters,
        kernel_size=kernel_size, pool_size=pool_size, dropout=dropout, fc_units=tuple(fc_units),
        output_activation=output_activation, input_scaling=input_scaling, log_c=log_c,
        sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
    )
    return build_choi(config, name=name)


def build_choi(config: ChoiConfig, *, name: str | None = None) -> TfauralModel:
    """Builds the Choi CNN described by ``config`` (see :func:`choi_cnn`)."""
    inputs = keras.Input(shape=(config.n_freq, config.n_frames, 1), name=INPUT_NAME, dtype="float32")
    x = InputScaling(mode=config.input_scaling, c=config.log_c, name="input_scaling")(inputs)
    for block in block_names(config.n_layers):
        x = keras.layers.Conv2D(config.n_filters, config.kernel_size, padding="same", name=block.conv)(x)
        x = keras.layers.ReLU(name=block.relu)(x)
        x = keras.layers.MaxPooling2D(config.pool_size, strides=config.pool_size, padding="valid", name=block.pool)(x)
        x = keras.layers.Dropout(config.dropout, name=block.dropout)(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(config.fc_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{index}")(x)
        x = keras.layers.Dropout(config.dropout, name=f"fc{index}_dropout")(x)
    outputs = keras.layers.Dense(config.n_outputs, activation=config.output_activation, name="output")(x)
    return TfauralModel(inputs, outputs, tfaural_config=config, name=name or "choi_cnn")


def block_names(n_layers: int = 5) -> tuple[ConvBlock, ...]:
    """Layer names of the conv blocks ``1 .. n_layers`` (conv, relu, pool, dropout)."""
    return tuple(
        ConvBlock(level=i, conv=f"conv{i}", relu=f"relu{i}", pool=f"pool{i}", dropout=f"dropout{i}")
        for i in range(1, n_layers + 1)
    )


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Extent of the input region that one unit of a layer sees.

    Attributes:
        layer: Block index (1-based).
        frames: Extent along time in STFT frames (hops).
        bins: Extent along frequency in STFT bins.
        ms: ``frames`` hops in milliseconds (``frames * hop_length / sample_rate``).
        hz: ``bins`` bins in Hz (``bins * sample_rate / n_fft``).
    """

    layer: int
    frames: int
    bins: int
    ms: float
    hz: float


def _as_field(layer: int, frames: int, bins: int, config: ChoiConfig) -> ReceptiveField:
    return ReceptiveField(
        layer=layer,
        frames=frames,
        bins=bins,
        ms=1000.0 * frames * config.hop_length / config.sample_rate,
        hz=bins * config.sample_rate / config.n_fft,
    )


def receptive_fields(config: ChoiConfig | None = None, *, after_pool: bool = True) -> tuple[ReceptiveField, ...]:
    """True receptive field of every block, by standard receptive-field arithmetic.

    With kernel ``k`` and pooling ``p``, a conv adds ``(k - 1) * j`` input steps and
    a pool adds ``(p - 1) * j`` and multiplies the jump ``j`` by ``p``. For the
    paper's network: conv outputs 3, 8, 18, 38, 78 and pool outputs 4, 10, 22, 46,
    94 frames (and bins, the network is symmetric).

    Args:
        config: The model config (default: the paper's 257 x 173 model).
        after_pool: Measure at ``pool<L>`` (True, what deconvolution from a block's
            output sees) or at ``conv<L>`` / ``relu<L>`` (False).

    Returns:
        One :class:`ReceptiveField` per block.
    """
    config = config or ChoiConfig(n_outputs=1)
    size, jump, fields = 1, 1, []
    for layer in range(1, config.n_layers + 1):
        size += (config.kernel_size - 1) * jump
        at_conv = size
        size += (config.pool_size - 1) * jump
        jump *= config.pool_size
        extent = size if after_pool else at_conv
        fields.append(_as_field(layer, extent, extent, config))
    return tuple(fields)


def paper_effective_sizes(config: ChoiConfig | None = None) -> tuple[ReceptiveField, ...]:
    """The "effective sizes" of Table 1 under the paper's own convention.

    Layer ``L`` covers ``kernel_size * pool_size**(L - 1) + 1`` frames and bins
    (4, 7, 13, 25, 49): the kernel spread over the pooled grid plus one step. In ms
    and Hz this gives 92.9, 162.5, 301.9, 580.5, 1137.8 ms and 86.1, 150.7, 279.9,
    538.3, 1055.1 Hz -- the paper's Table 1 to within 1 ms / 1 Hz except layer 5's
    frequency, which the paper gives as 1270 Hz (see the module docstring).

    Args:
        config: The model config (default: the paper's model).

    Returns:
        One :class:`ReceptiveField` per block.
    """
    config = config or ChoiConfig(n_outputs=1)
    sizes = [config.kernel_size * config.pool_size ** (layer - 1) + 1 for layer in range(1, config.n_layers + 1)]
    return tuple(_as_field(layer, size, size, config) for layer, size in enumerate(sizes, start=1))
