"""The SampleCNN family of Lee, Park, Kim & Nam (2018): m^n-SampleCNN and frame-level baselines.

All three families take a waveform ``[batch, n_samples, 1]`` float32 (channels-last,
input named ``waveform``) and share one module stack, built by :func:`_modules`:

==========================  =========================================================
``conv0``, ``bn0``,         front end: strided Conv1D (filter = stride =
``relu0``                   ``filter_sizes[0]`` for SampleCNN, filter ``window`` /
                            stride ``hop`` for the raw-frame model), 128 filters
``frame_padding``           raw-frame only: zero-pads ``window - hop`` samples on the
                            right so that conv0 yields ``n_samples / hop`` frames
``melspectrogram``,         mel-frame only (instead of conv0): in-model
``standardise``             ``log(1 + 10 A)`` mel spectrogram
                            (:class:`~tfaural.models.layers.LogMelSpectrogram`) and
                            scalar standardisation (:func:`adapt_standardise`)
``conv<i>``, ``bn<i>``,     module i = 1..N: Conv1D(size m_i, ``padding="same"``) ->
``relu<i>``, ``pool<i>``    BatchNorm -> ReLU -> MaxPool1D(m_i)
``conv_1x1``, ``bn_1x1``,   Conv1D(512, 1) -> BatchNorm -> ReLU
``relu_1x1``
``dropout``                 Dropout 0.5
``flatten``                 ``[batch, 1, 512]`` -> ``[batch, 512]``
``output``                  Dense(n_outputs, sigmoid)
==========================  =========================================================

Every convolution is followed by batch normalisation and ReLU (Sec. 5.2) and
keeps its bias, as the parameter counts of Table 1 imply (e.g. 49,280 =
3 * 128 * 128 + 128). Module channel counts follow Table 1 by position
(128, 128, 256 x 5, 512 x 2 for nine modules); shallower stacks take the last
entries and deeper ones prepend 128s (:func:`tfaural.config.default_module_channels`).

The input length is the front-end stride times the product of the module sizes
(3^10 = 59,049 samples, 2678 ms at 22,050 Hz, for the 3^9 model), so the modules
reduce the time axis to exactly 1. :data:`SAMPLECNN_PRESETS` holds the Table 3
models of the downsampling study and :data:`TABLE2_FRAME_SETTINGS` the
window/hop settings of the Table 2 frame-level baselines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfaural.config import SampleCNNConfig
from tfaural.errors import ModelError, ParameterError
from tfaural.models.layers import ConvBlock, LogMelSpectrogram, Standardise, TfauralModel

__all__ = [
    "samplecnn_model",
    "samplecnn_preset",
    "preset_filter_sizes",
    "mn_filter_sizes",
    "mel_frame_cnn",
    "raw_frame_cnn",
    "build_samplecnn",
    "block_names",
    "adapt_standardise",
    "count_macs",
    "SAMPLECNN_PRESETS",
    "PRESET_INPUT_SIZES",
    "TABLE2_FRAME_SETTINGS",
    "INPUT_NAME",
]

INPUT_NAME = "waveform"


def _digits(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split("-"))


#: Table 3 of Lee et al. (2018): sample rate (Hz) -> filter sizes, bottom to top
#: (the first entry is conv0's filter = stride, the rest the nine modules).
SAMPLECNN_PRESETS: dict[int, tuple[int, ...]] = {
    2000: _digits("3-3-3-3-2-2-2-2-2-2"),
    4000: _digits("3-3-3-3-2-2-2-4-2-2"),
    8000: _digits("3-3-3-3-2-2-4-4-2-2"),
    12000: _digits("3-3-3-3-3-2-4-4-2-2"),
    16000: _digits("3-3-3-3-3-3-3-5-2-2"),
    20000: _digits("3-3-3-3-3-3-3-3-4-2"),
    22050: _digits("3-3-3-3-3-3-3-3-3-3"),
}

#: Table 3 input sizes in samples (the product of each preset's filter sizes).
PRESET_INPUT_SIZES: dict[int, int] = {
    2000: 5184, 4000: 10368, 8000: 20736, 12000: 31104, 16000: 43740, 20000: 52488, 22050: 59049,
}

#: Table 2 frame-level settings (window = filter size, hop = stride), in samples.
TABLE2_FRAME_SETTINGS: tuple[tuple[int, int], ...] = ((729, 729), (729, 243), (243, 243), (243, 81), (81, 81))


def mn_filter_sizes(m: int, n: int) -> tuple[int, ...]:
    """Filter sizes of the m^n-SampleCNN: ``(m,) * (n + 1)`` (conv0 plus n modules, input m^(n+1))."""
    if not (isinstance(m, int) and m >= 2 and isinstance(n, int) and n >= 1):
        raise ParameterError(f"m={m!r}, n={n!r} are invalid: expected integers m >= 2 and n >= 1")
    return (m,) * (n + 1)


def preset_filter_sizes(sample_rate: int) -> tuple[int, ...]:
    """Table 3 filter sizes for ``sample_rate`` (Hz).

    Raises:
        ModelError: If the paper has no model for that sample rate.
    """
    try:
        return SAMPLECNN_PRESETS[sample_rate]
    except (KeyError, TypeError):
        raise ModelError(
            f"no SampleCNN preset for sample_rate={sample_rate!r} Hz; known rates: {sorted(SAMPLECNN_PRESETS)}"
        ) from None


def samplecnn_model(
    *,
    filter_sizes: tuple[int, ...] = (3,) * 10,
    n_outputs: int = 50,
    n_samples: int | None = None,
    channels: tuple[int, ...] | None = None,
    front_filters: int = 128,
    top_filters: int = 512,
    dropout: float = 0.5,
    output_activation: str = "sigmoid",
    sample_rate: int = 22050,
    name: str | None = None,
) -> TfauralModel:
    """Builds an m^n-SampleCNN (Lee et al. 2018, Table 1 for the default 3^9 model).

    Args:
        filter_sizes: ``filter_sizes[0]`` is the filter size and stride of ``conv0``;
            each further entry adds one module with that filter and pooling size.
        n_outputs: Output units (50 tags).
        n_samples: Expected input length in samples; if given it must equal
            ``prod(filter_sizes)``.
        channels: Channels per module (``None``: Table 1's schedule).
        front_filters: Filters of ``conv0``.
        top_filters: Filters of ``conv_1x1``.
        dropout: Dropout rate before the output layer.
        output_activation: ``"sigmoid"``, ``"softmax"`` or ``"linear"``.
        sample_rate: Sample rate of the input in Hz (recorded in the config).
        name: Model name (default ``"samplecnn"``).

    Returns:
        A :class:`~tfaural.models.layers.TfauralModel` mapping ``[batch, prod(filter_sizes), 1]``
        waveforms to ``[batch, n_outputs]``.

    Raises:
        ConfigError: If a filter size is < 2 or another argument is out of range.
        ParameterError: If ``n_samples`` does not equal ``prod(filter_sizes)``.
    """
    config = SampleCNNConfig(
        family="samplecnn", filter_sizes=tuple(filter_sizes), n_outputs=n_outputs,
        channels=None if channels is None else tuple(channels), front_filters=front_filters,
        top_filters=top_filters, dropout=dropout, output_activation=output_activation, sample_rate=sample_rate,
    )
    _check_length(config, n_samples)
    return build_samplecnn(config, name=name)


def samplecnn_preset(sample_rate: int, *, n_outputs: int = 50, name: str | None = None, **kwargs: Any) -> TfauralModel:
    """Builds the Table 3 SampleCNN for ``sample_rate`` (Hz); ``kwargs`` go to :func:`samplecnn`.

    Raises:
        ModelError: If the paper has no model for that sample rate.
    """
    return samplecnn_model(
        filter_sizes=preset_filter_sizes(sample_rate), n_outputs=n_outputs, sample_rate=sample_rate, name=name,
        **kwargs,
    )


def mel_frame_cnn(
    *,
    window: int,
    hop: int,
    n_samples: int = 59049,
    module_size: int = 3,
    n_outputs: int = 50,
    sample_rate: int = 22050,
    n_fft: int = 729,
    n_mels: int = 128,
    log_c: float = 10.0,
    channels: tuple[int, ...] | None = None,
    top_filters: int = 512,
    dropout: float = 0.5,
    output_activation: str = "sigmoid",
    name: str | None = None,
) -> TfauralModel:
    """Builds the frame-level mel-spectrogram 1D CNN baseline (Table 2).

    The model computes ``log(1 + log_c * A)`` of a 128-band mel spectrogram of its
    waveform input (``window``/``hop``, FFT size ``n_fft``; see
    :class:`~tfaural.models.layers.LogMelSpectrogram` for the framing, which yields
    exactly ``n_samples / hop`` frames), standardises it (statistics set by
    :func:`adapt_standardise`), then runs ``log_{module_size}(n_samples / hop)``
    modules of size ``module_size`` (``conv1 ..``) and the SampleCNN head.

    Args:
        window: Window size in samples (729, 243 or 81 in the paper).
        hop: Hop size in samples (<= window).
        n_samples: Input length in samples; ``n_samples / hop`` must be a power of ``module_size``.
        module_size: Filter and pooling size of the modules.
        n_outputs: Output units.
        sample_rate: Sample rate of the input in Hz.
        n_fft: FFT size in samples (>= window; shorter windows are zero-padded).
        n_mels: Mel bands.
        log_c: Compression constant C.
        channels: Channels per module (``None``: the last entries of Table 1's schedule).
        top_filters: Filters of ``conv_1x1``.
        dropout: Dropout rate before the output.
        output_activation: Output activation.
        name: Model name (default ``"mel_frame_cnn"``).

    Raises:
        ParameterError: If ``n_samples / hop`` is not a power of ``module_size``.
        ConfigError: If another argument is out of range.
    """
    config = SampleCNNConfig(
        family="mel-frame", filter_sizes=_frame_module_sizes(n_samples, hop, module_size), window=window, hop=hop,
        n_outputs=n_outputs, sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, log_c=log_c,
        channels=None if channels is None else tuple(channels), top_filters=top_filters, dropout=dropout,
        output_activation=output_activation,
    )
    return build_samplecnn(config, name=name)


def raw_frame_cnn(
    *,
    window: int,
    hop: int,
    n_samples: int = 59049,
    module_size: int = 3,
    n_outputs: int = 50,
    sample_rate: int = 22050,
    front_filters: int = 128,
    channels: tuple[int, ...] | None = None,
    top_filters: int = 512,
    dropout: float = 0.5,
    output_activation: str = "sigmoid",
    name: str | None = None,
) -> TfauralModel:
    """Builds the frame-level raw-waveform baseline (Table 2).

    A strided Conv1D ``conv0`` with filter ``window``, stride ``hop`` and 128 filters
    (standing in for the mel spectrogram) on the waveform zero-padded right by
    ``window - hop`` samples (so it yields ``n_samples / hop`` frames), then the
    same modules and head as :func:`mel_frame_cnn`.

    Args:
        window: Filter size of ``conv0`` in samples.
        hop: Stride of ``conv0`` in samples (<= window).
        n_samples: Input length; ``n_samples / hop`` must be a power of ``module_size``.
        module_size: Filter and pooling size of the modules.
        n_outputs: Output units.
        sample_rate: Sample rate of the input in Hz.
        front_filters: Filters of ``conv0``.
        channels: Channels per module (``None``: the last entries of Table 1's schedule).
        top_filters: Filters of ``conv_1x1``.
        dropout: Dropout rate before the output.
        output_activation: Output activation.
        name: Model name (default ``"raw_frame_cnn"``).

    Raises:
        ParameterError: If ``n_samples / hop`` is not a power of ``module_size``.
        ConfigError: If another argument is out of range.
    """
    config = SampleCNNConfig(
        family="raw-frame", filter_sizes=_frame_module_sizes(n_samples, hop, module_size), window=window, hop=hop,
        n_outputs=n_outputs, sample_rate=sample_rate, front_filters=front_filters,
        channels=None if channels is None else tuple(channels), top_filters=top_filters, dropout=dropout,
        output_activation=output_activation,
    )
    return build_samplecnn(config, name=name)


def _check_length(config: SampleCNNConfig, n_samples: int | None) -> None:
    if n_samples is not None and n_samples != config.input_length:
        raise ParameterError(
            f"n_samples={n_samples!r} does not match filter_sizes={config.filter_sizes}: "
            f"the input length must be their product, {config.input_length}"
        )


def _frame_module_sizes(n_samples: int, hop: int, module_size: int) -> tuple[int, ...]:
    """Module sizes ``(module_size,) * n`` with ``hop * module_size**n == n_samples``."""
    if not (isinstance(module_size, int) and module_size >= 2):
        raise ParameterError(f"module_size={module_size!r} is invalid: expected an integer >= 2")
    if not (isinstance(hop, int) and hop > 0 and isinstance(n_samples, int) and n_samples > 0):
        raise ParameterError(f"hop={hop!r}, n_samples={n_samples!r} are invalid: expected positive integers")
    frames, n = n_samples // hop, 0
    while frames > 1 and frames % module_size == 0:
        frames, n = frames // module_size, n + 1
    if frames != 1 or n_samples % hop or n == 0:
        raise ParameterError(
            f"n_samples={n_samples} with hop={hop} gives {n_samples / hop:g} frames, which is not a positive power "
            f"of module_size={module_size}; choose n_samples = hop * {module_size}**n"
        )
    return (module_size,) * n


def build_samplecnn(config: SampleCNNConfig, *, name: str | None = None) -> TfauralModel:
    """Builds any SampleCNN-family model from its config (see the module docstring)."""
    default_names = {"samplecnn": "samplecnn", "mel-frame": "mel_frame_cnn", "raw-frame": "raw_frame_cnn"}
    inputs = keras.Input(shape=(config.input_length, 1), name=INPUT_NAME, dtype="float32")
    x = _front_end(inputs, config)
    x = _modules(x, config)
    outputs = _head(x, config)
    return TfauralModel(inputs, outputs, tfaural_config=config, name=name or default_names[config.family])


def _conv_bn_relu(x: Any, *, filters: int, size: int, stride: int, padding: str, suffix: str) -> Any:
    x = keras.layers.Conv1D(filters, size, strides=stride, padding=padding, name=f"conv{suffix}")(x)
    x = keras.layers.BatchNormalization(name=f"bn{suffix}")(x)
    return keras.layers.ReLU(name=f"relu{suffix}")(x)


def _front_end(inputs: Any, config: SampleCNNConfig) -> Any:
    """Waveform ``[b, n, 1]`` -> ``[b, n / front_stride, channels]``."""
    if config.family == "mel-frame":
        x = LogMelSpectrogram(
            sample_rate=config.sample_rate, n_fft=config.n_fft, window=int(config.window or 0),
            hop=int(config.hop or 0), n_mels=config.n_mels, c=config.log_c, name="melspectrogram",
        )(inputs)
        return Standardise(name="standardise")(x)
    if config.family == "raw-frame":
        window, hop = int(config.window or 0), int(config.hop or 0)
        x = keras.layers.ZeroPadding1D((0, window - hop), name="frame_padding")(inputs)
        return _conv_bn_relu(x, filters=config.front_filters, size=window, stride=hop, padding="valid", suffix="0")
    size = config.filter_sizes[0]
    return _conv_bn_relu(inputs, filters=config.front_filters, size=size, stride=size, padding="valid", suffix="0")


def _modules(x: Any, config: SampleCNNConfig) -> Any:
    """The shared module stack: ``conv<i>`` ("same") -> ``bn<i>`` -> ``relu<i>`` -> ``pool<i>``."""
    for index, (size, channels) in enumerate(zip(config.module_sizes, config.module_channels, strict=True), start=1):
        x = _conv_bn_relu(x, filters=channels, size=size, stride=1, padding="same", suffix=str(index))
        x = keras.layers.MaxPooling1D(size, strides=size, padding="valid", name=f"pool{index}")(x)
    return x


def _head(x: Any, config: SampleCNNConfig) -> Any:
    x = _conv_bn_relu(x, filters=config.top_filters, size=1, stride=1, padding="valid", suffix="_1x1")
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.layers.Dense(config.n_outputs, activation=config.output_activation, name="output")(x)


def block_names(config: SampleCNNConfig) -> tuple[ConvBlock, ...]:
    """Layer names of every conv block, bottom to top.

    Level 0 is ``conv0`` (absent in the mel-frame model), levels 1..N the modules
    and level N + 1 the 1x1 conv (whose block ends with ``dropout``).
    """
    blocks = []
    if config.family != "mel-frame":
        blocks.append(ConvBlock(level=0, conv="conv0", batch_norm="bn0", relu="relu0"))
    for i in range(1, config.n_modules + 1):
        blocks.append(ConvBlock(level=i, conv=f"conv{i}", batch_norm=f"bn{i}", relu=f"relu{i}", pool=f"pool{i}"))
    top = config.n_modules + 1
    blocks.append(ConvBlock(level=top, conv="conv_1x1", batch_norm="bn_1x1", relu="relu_1x1", dropout="dropout"))
    return tuple(blocks)


def count_macs(config: SampleCNNConfig) -> int:
    """Multiply-accumulates of the conv and dense layers for one input segment.

    Counts ``output_length * kernel_size * in_channels * out_channels`` per Conv1D
    (zero padding included, as it is computed) and ``in * out`` for the output
    layer. Batch norm, ReLU, pooling and the mel front end are not counted.

    Args:
        config: The model config.

    Returns:
        MACs per segment (FLOPs are about twice this).
    """
    macs, length, channels = 0, config.input_length, 1
    if config.family == "mel-frame":
        length, channels = config.input_length // config.front_stride, config.n_mels
    else:
        kernel = config.filter_sizes[0] if config.family == "samplecnn" else int(config.window or 0)
        length //= config.front_stride
        macs += length * kernel * channels * config.front_filters
        channels = config.front_filters
    for size, out_channels in zip(config.module_sizes, config.module_channels, strict=True):
        macs += length * size * channels * out_channels
        length, channels = length // size, out_channels
    macs += length * channels * config.top_filters
    return macs + length * config.top_filters * config.n_outputs


def adapt_standardise(
    model: keras.Model, waveforms: np.ndarray | tf.data.Dataset | Iterable[Any], *, batch_size: int = 32
) -> tuple[float, float]:
    """Sets a mel-frame model's ``standardise`` layer to the mean/std of its log-mel input.

    Like Lee et al. (Sec. 5.3): one scalar mean and standard deviation over every
    time-frequency value of the whole (training) input.

    Args:
        model: A mel-frame model (has ``melspectrogram`` and ``standardise`` layers).
        waveforms: float32 waveforms ``[n, n_samples]`` or ``[n, n_samples, 1]`` (NumPy),
            or a ``tf.data.Dataset`` / iterable of such batches (or of ``(waveform, label)`` pairs).
        batch_size: Batch size for NumPy input.

    Returns:
        ``(mean, std)`` as set on the layer.

    Raises:
        ModelError: If the model has no ``melspectrogram``/``standardise`` layer.
        ParameterError: If the data is empty or has zero variance.
    """
    try:
        mel_layer, standardise = model.get_layer("melspectrogram"), model.get_layer("standardise")
    except ValueError:
        raise ModelError(f"model {model.name!r} has no 'melspectrogram'/'standardise' layers (not mel-frame)") from None
    if not isinstance(standardise, Standardise):
        raise ModelError(f"layer 'standardise' of model {model.name!r} is a {type(standardise).__name__}")
    total, total_sq, count = 0.0, 0.0, 0
    for batch in _batches(waveforms, batch_size):
        mel = mel_layer(tf.reshape(tf.convert_to_tensor(batch, tf.float32), [tf.shape(batch)[0], -1, 1]))
        values = mel.numpy().astype(np.float64)
        total, total_sq, count = total + values.sum(), total_sq + np.square(values).sum(), count + values.size
    if count == 0:
        raise ParameterError("adapt_standardise got no waveforms: expected at least one batch")
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    standardise.set_statistics(mean=mean, std=std)
    return mean, std


def _batches(waveforms: Any, batch_size: int) -> Iterable[Any]:
    if isinstance(waveforms, np.ndarray):
        for start in range(0, len(waveforms), batch_size):
            yield waveforms[start : start + batch_size]
        return
    for batch in waveforms:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch
