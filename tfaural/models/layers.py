"""Serialisable Keras building blocks shared by the tfaural models.

* :class:`TfauralModel` — a functional ``keras.Model`` that carries the frozen
  config which built it (``model.tfaural_config``), through ``to_json`` and
  ``.keras`` save/reload.
* :class:`InputScaling` — linear or ``log(1 + c|x|)`` input scaling (Choi model).
* :class:`LogMelSpectrogram` — in-model log-mel front end of the mel-frame
  SampleCNN baseline, built on :mod:`tfaural.spectral`.
* :class:`Standardise` — ``(x - mean) / std`` with scalar statistics set from data.
* :class:`RowConv2D` — a ``Conv2D`` of ``1 x K`` kernels over one input channel (musicnn's temporal
  filters) computed as a convolution of blocks of samples (a block-Toeplitz product).
* :class:`ClipFeatures` — slides feature extractors over whole clips and pools
  their activations over time (multi-level multi-scale aggregation).
* :class:`ConvBlock` — the layer names of one conv block, for code (deconvolution,
  feature extraction, export) that walks a model block by block.

All layers contain only core TensorFlow ops, accept an unknown batch size and are
registered with ``keras.saving.register_keras_serializable(package="tfaural")``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfaural import spectral
from tfaural.config import CHOI_INPUT_SCALINGS, Config, model_config_from_dict, model_config_to_dict
from tfaural.errors import ModelError, ParameterError

#: Modes of :class:`InputScaling`.
INPUT_SCALINGS = (*CHOI_INPUT_SCALINGS, "log10")

__all__ = [
    "INPUT_SCALINGS",
    "TfauralModel",
    "InputScaling",
    "LogMelSpectrogram",
    "Standardise",
    "RowConv2D",
    "ClipFeatures",
    "ConvBlock",
    "config_from_model",
    "pool_segment_maps",
]


def pool_segment_maps(maps: tf.Tensor, valid: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Max- and mean-pools a clip's per-segment feature maps over its segments and positions.

    The one pooling behind the transfer features (Lee et al. 2018, Section 4.3): the
    :class:`ClipFeatures` layer and the export's ``features`` signature both call it. Padded
    segments (``valid`` False) take part in neither statistic.

    Args:
        maps: float ``[batch, segments, positions, channels]``.
        valid: bool ``[batch, segments]``, which segments are real (``None``: all). Every clip
            needs at least one.

    Returns:
        ``(maximum, mean)``, each float ``[batch, channels]``.
    """
    if valid is None:
        valid = tf.ones(tf.shape(maps)[:2], tf.bool)
    mask = valid[:, :, tf.newaxis, tf.newaxis]
    maximum = tf.reduce_max(tf.where(mask, maps, tf.fill(tf.shape(maps), tf.constant(-np.inf, maps.dtype))),
                            axis=[1, 2])
    total = tf.reduce_sum(maps * tf.cast(mask, maps.dtype), axis=[1, 2])
    counts = tf.reduce_sum(tf.cast(valid, maps.dtype), axis=1)
    positions = counts * tf.cast(tf.shape(maps)[2], maps.dtype)
    return maximum, total / positions[:, tf.newaxis]


@dataclasses.dataclass(frozen=True)
class ConvBlock:
    """Names of the layers of one convolutional block, in forward order.

    Attributes:
        level: Block index: 1..N for the Choi blocks and SampleCNN modules, 0 for a
            strided front-end conv (``conv0``), N + 1 for the SampleCNN 1x1 conv.
        conv: The convolution layer (no activation inside it).
        relu: The ReLU layer after the conv (or after its batch norm).
        batch_norm: The batch-normalisation layer between conv and ReLU, if any.
        pool: The max-pooling layer after the ReLU, if any.
        dropout: The dropout layer closing the block, if any.
    """

    level: int
    conv: str
    relu: str
    batch_norm: str | None = None
    pool: str | None = None
    dropout: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """All layer names of the block in forward order."""
        ordered = (self.conv, self.batch_norm, self.relu, self.pool, self.dropout)
        return tuple(name for name in ordered if name is not None)

    @property
    def output(self) -> str:
        """The last layer of the block before dropout (the block's feature map)."""
        return self.pool if self.pool is not None else self.relu


@keras.saving.register_keras_serializable(package="tfaural")
class TfauralModel(keras.Model):
    """A functional model that remembers the tfaural config that built it.

    ``get_config`` stores only the name and the config; ``from_config`` rebuilds the
    network with :func:`tfaural.models.build`, so ``model_from_json`` and
    ``keras.models.load_model`` return the same architecture (and, for ``.keras``
    files, the same weights) with ``tfaural_config`` intact.

    Args:
        inputs: Functional inputs.
        outputs: Functional outputs.
        tfaural_config: The frozen model config (ChoiConfig, SampleCNNConfig, ...).
        **kwargs: ``name`` and other ``keras.Model`` arguments.
    """

    def __init__(self, inputs: Any, outputs: Any, *, tfaural_config: Config, **kwargs: Any) -> None:
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._tfaural_config = tfaural_config

    @property
    def tfaural_config(self) -> Config:
        """The frozen config that fully determines this model's architecture."""
        return self._tfaural_config

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "tfaural_config": model_config_to_dict(self._tfaural_config),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> TfauralModel:
        from tfaural.models import build  # deferred: tfaural.models imports this module

        model = build(model_config_from_dict(config["tfaural_config"]), name=config.get("name"))
        model.trainable = bool(config.get("trainable", True))
        return model


def config_from_model(model: keras.Model) -> Config:
    """Returns the tfaural config a model was built from (also after a reload).

    Raises:
        ModelError: If the model was not built by a tfaural builder.
    """
    config = getattr(model, "tfaural_config", None)
    if not isinstance(config, Config):
        raise ModelError(
            f"model {getattr(model, 'name', model)!r} carries no tfaural config; "
            "build it with tfaural.models.build or one of the tfaural.models builders"
        )
    return config


@keras.saving.register_keras_serializable(package="tfaural")
class InputScaling(keras.layers.Layer):
    """Scales a non-negative magnitude input: identity, ``log(1 + c|x|)`` or ``log10(1 + c x)``.

    Args:
        mode: ``"linear"`` (identity), ``"log"`` (Choi CNN) or ``"log10"`` (musicnn's mel power
            compression, :func:`tfaural.spectral.log10_compress`).
        c: Compression constant of the log modes (> 0).
        **kwargs: Keras layer arguments (``name``...).
    """

    def __init__(self, mode: str = "linear", c: float = 10.0, **kwargs: Any) -> None:
        # float32 under mixed precision too (unless given a dtype): a front end's FFT and log take float32
        # values; a float16 waveform or magnitude loses precision (and failed to convert to float32)
        super().__init__(**{"dtype": "float32", **kwargs})
        if mode not in INPUT_SCALINGS:
            raise ParameterError(f"mode={mode!r} is invalid: expected one of {INPUT_SCALINGS}")
        if not c > 0:
            raise ParameterError(f"c={c!r} is invalid: expected a positive compression constant")
        self.mode = mode
        self.c = float(c)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        if self.mode == "linear":
            return tf.identity(inputs)
        if self.mode == "log10":
            return spectral.log10_compress(inputs, self.c)
        return spectral.log_compress(inputs, self.c)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode, "c": self.c}


@keras.saving.register_keras_serializable(package="tfaural")
class LogMelSpectrogram(keras.layers.Layer):
    """Log-compressed mel spectrogram with exactly ``samples // hop`` frames.

    Framing (chosen so that a frame-level model's time axis is ``n_samples / hop``,
    e.g. 59,049 / 243 = 243 = 3^5, which its 3-size modules reduce to 1): frames are
    NOT centred; frame ``t`` windows samples ``[t * hop, t * hop + window)`` and the
    signal is zero-padded on the right by ``window - hop`` samples. The windowed
    frame is zero-padded to ``n_fft`` (Lee et al. 2018, Sec. 5.3), a periodic Hann
    window is used (:mod:`tfaural.spectral`), magnitudes (power 1) are mapped to
    Slaney mel bands and compressed with ``log(1 + c * A)``.

    Input ``[batch, samples, 1]`` float32 waveform; output ``[batch, frames, n_mels]``
    (time steps x mel channels, channels-last).

    Args:
        sample_rate: Sample rate of the waveform in Hz.
        n_fft: FFT size in samples (>= window).
        window: Window length in samples.
        hop: Hop between frames in samples (<= window).
        n_mels: Number of mel bands.
        c: Compression constant of ``log(1 + c * A)``.
        **kwargs: Keras layer arguments.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        n_fft: int,
        window: int,
        hop: int,
        n_mels: int = 128,
        c: float = 10.0,
        **kwargs: Any,
    ) -> None:
        # float32 under mixed precision too (unless given a dtype): a front end's FFT and log take float32
        # values; a float16 waveform or magnitude loses precision (and failed to convert to float32)
        super().__init__(**{"dtype": "float32", **kwargs})
        if not 0 < hop <= window <= n_fft:
            raise ParameterError(
                f"window={window!r}, hop={hop!r}, n_fft={n_fft!r} are invalid: expected 0 < hop <= window <= n_fft"
            )
        if not c > 0:
            raise ParameterError(f"c={c!r} is invalid: expected a positive compression constant")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.window = int(window)
        self.hop = int(hop)
        self.n_mels = int(n_mels)
        self.c = float(c)
        self._weights_np = spectral.mel_filterbank(sample_rate=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels)

    @property
    def padding(self) -> tuple[int, int]:
        """(left, right) zero padding in samples applied before framing with ``n_fft``-long frames.

        The window sits ``(n_fft - window) // 2`` samples into each ``n_fft`` frame, so
        padding that much on the left makes window ``t`` start at sample ``t * hop``;
        the total padding ``n_fft - hop`` yields ``samples // hop`` frames.
        """
        left = (self.n_fft - self.window) // 2
        return left, self.n_fft - self.hop - left

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        waveform = tf.squeeze(tf.convert_to_tensor(inputs, tf.float32), axis=-1)  # [batch, samples]
        left, right = self.padding
        waveform = tf.pad(waveform, [[0, 0], [left, right]])
        mag = spectral.magnitude(
            waveform, n_fft=self.n_fft, hop_length=self.hop, win_length=self.window, center=False
        )  # [batch, freq, frames]
        mel = tf.einsum("mf,bft->btm", tf.constant(self._weights_np), mag)
        return spectral.log_compress(mel, self.c)

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` input samples (``n_samples // hop``)."""
        left, right = self.padding
        return spectral.n_frames(n_samples + left + right, n_fft=self.n_fft, hop_length=self.hop, center=False)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        samples = input_shape[1]
        frames = None if samples is None else self.n_frames(samples)
        return (input_shape[0], frames, self.n_mels)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "window": self.window,
            "hop": self.hop,
            "n_mels": self.n_mels,
            "c": self.c,
        }


#: Samples per block of :class:`RowConv2D` (of 8, 16 and 32, the fastest for musicnn's 1 x 32, 64 and 128
#: kernels with oneDNN's kernels on a 2-core AMD EPYC, tried once; 16 was as fast with TensorFlow's own).
ROW_BLOCK = 8


@keras.saving.register_keras_serializable(package="tfaural")
class RowConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` whose ``1 x K`` kernels read one input channel, computed as a convolution of blocks.

    musicnn's temporal filters (``1 x 128``, ``1 x 64``, ``1 x 32`` over the log-mel, 51 maps each) are
    such convolutions, which TensorFlow runs far below the machine's rate (slower still with oneDNN's kernels
    on an AVX2 CPU). Here each row is cut into blocks of
    :data:`ROW_BLOCK` samples and the kernel becomes a block-Toeplitz one, ``[1, m, B, B * filters]``
    (``m = (B + K - 2) // B + 1`` blocks): one convolution with ``B`` input and ``B * filters`` output
    channels, a shape both kernel libraries run near their matrix-product rate (``m * B`` instead of
    ``K`` multiply-adds per output; the three banks 2.9x faster than as ``Conv2D`` with TensorFlow's kernels and
    3.7x with oneDNN's on a 2-core AVX2 AMD EPYC, ``benchmarks/onednn.py``; ``tests/models/test_layers.py``
    checks the outputs against ``Conv2D``'s). The layer's weights, config and outputs (to round-off) are
    ``Conv2D``'s, and every other shape (several input channels, taller kernels, strides, dilation,
    groups, ``channels_first``) is left to ``Conv2D``. Deconvolution (``tfaural.deconv``) treats it as the
    ``Conv2D`` it is.

    Input ``[batch, rows, columns, 1]``; output ``[batch, rows, columns', filters]`` (``columns' =
    columns`` for ``"same"``, ``columns - K + 1`` for ``"valid"``).
    """

    def _blocked(self, kernel: Any) -> bool:
        return (len(kernel.shape) == 4 and kernel.shape[0] == 1 and kernel.shape[2] == 1
                and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1) and self.groups == 1
                and self.data_format == "channels_last" and self.padding in ("same", "valid"))

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        if not self._blocked(kernel):
            return super().convolution_op(inputs, kernel)
        taps, filters, block = int(kernel.shape[1]), int(kernel.shape[3]), ROW_BLOCK
        blocks_per_output = (block + taps - 2) // block + 1
        x = tf.convert_to_tensor(inputs)[..., 0]  # [batch, rows, columns]
        shape = tf.shape(x)
        left = (taps - 1) // 2 if self.padding == "same" else 0  # TensorFlow's "same": the extra sample right
        length = shape[2] if self.padding == "same" else shape[2] - taps + 1
        n_blocks = (length + block - 1) // block
        total = (n_blocks + blocks_per_output - 1) * block  # >= left + columns (see tests)
        x = tf.pad(x, [[0, 0], [0, 0], [left, total - left - shape[2]]])
        x = tf.reshape(x, [shape[0], shape[1], n_blocks + blocks_per_output - 1, block])
        # weight[i, s_in, s_out, c] = kernel tap (i * B + s_in - s_out), zero outside 0..K-1 (the extra zero row)
        i, s_in, s_out = np.meshgrid(np.arange(blocks_per_output), np.arange(block), np.arange(block), indexing="ij")
        tap = i * block + s_in - s_out
        index = np.where((tap >= 0) & (tap < taps), tap, taps).astype(np.int32)
        kernel = tf.convert_to_tensor(kernel)
        rows = tf.concat([kernel[0, :, 0, :], tf.zeros([1, filters], kernel.dtype)], axis=0)
        weight = tf.reshape(tf.gather(rows, index), [1, blocks_per_output, block, block * filters])
        y = tf.nn.conv2d(x, weight, strides=1, padding="VALID")  # [batch, rows, blocks, B * filters]
        y = tf.reshape(y, [shape[0], shape[1], n_blocks * block, filters])
        return y[:, :, :length, :]


@keras.saving.register_keras_serializable(package="tfaural")
class Standardise(keras.layers.Layer):
    """``(x - mean) / std`` with scalar, non-trainable statistics.

    Lee et al. (2018, Sec. 5.3) standardise the log-mel input by the mean and
    standard deviation of the entire training input. The statistics are weights
    (saved with the model); set them with :meth:`set_statistics` or
    :func:`tfaural.models.samplecnn.adapt_standardise`. They start as 0 and 1.

    Args:
        **kwargs: Keras layer arguments.
    """

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.mean = self.add_weight(name="mean", shape=(), initializer="zeros", trainable=False)
        self.std = self.add_weight(name="std", shape=(), initializer="ones", trainable=False)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return (inputs - tf.cast(self.mean, inputs.dtype)) / tf.cast(self.std, inputs.dtype)

    def set_statistics(self, *, mean: float, std: float) -> None:
        """Sets the mean and standard deviation (``std`` must be positive and finite)."""
        if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
            raise ParameterError(f"mean={mean!r}, std={std!r} are invalid: expected finite values and std > 0")
        if not self.built:
            raise ModelError(f"layer {self.name!r} is not built yet; build the model before setting statistics")
        self.mean.assign(float(mean))
        self.std.assign(float(std))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape


@keras.saving.register_keras_serializable(package="tfaural")
class ClipFeatures(keras.layers.Layer):
    """Multi-level multi-scale features of whole clips (Lee et al. 2018, Sec. 4.1).

    For each extractor (a model mapping ``[segments, seg_len, 1]`` to a list of
    ``[segments, time, channels]`` feature maps), the clip is cut into segments of
    the extractor's input length in-graph (``tf.signal.frame``; a clip shorter than
    one segment is zero-padded to one segment, a trailing partial segment is
    dropped), all segments of all clips run as one batch, and every feature map is
    max- and mean-pooled over all time steps of all segments of its clip.

    Input ``[batch, samples]`` float32 waveform. Output ``[batch, features]`` with
    features ordered extractor by extractor, level by level, ``[max, mean]`` per
    level, so ``features = 2 * sum(channels)``. The extractors always run in
    inference mode (batch norm uses its moving statistics).

    Args:
        extractors: Feature-extractor models (see above), one per scale.
        segment_hop: Hop between segment starts in samples (``None``: each
            extractor's segment length, i.e. contiguous non-overlapping segments).
        **kwargs: Keras layer arguments.
    """

    def __init__(self, extractors: Sequence[keras.Model], *, segment_hop: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not extractors:
            raise ParameterError("extractors=[] is invalid: expected at least one feature-extractor model")
        if segment_hop is not None and segment_hop <= 0:
            raise ParameterError(f"segment_hop={segment_hop!r} is invalid: expected None or a positive integer")
        self.extractors = list(extractors)
        self.segment_hop = segment_hop
        for extractor in self.extractors:
            length = extractor.inputs[0].shape[1]
            if length is None:
                raise ModelError(f"extractor {extractor.name!r} has an unknown input length; expected a fixed length")

    @property
    def segment_lengths(self) -> tuple[int, ...]:
        """Input length in samples of each extractor."""
        return tuple(int(e.inputs[0].shape[1]) for e in self.extractors)

    @property
    def n_features(self) -> int:
        """Length of the output feature vector."""
        return sum(2 * int(out.shape[-1]) for e in self.extractors for out in e.outputs)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        for extractor, length in zip(self.extractors, self.segment_lengths, strict=True):
            if not extractor.built:
                extractor.build((None, length, 1))

    def _pooled(self, extractor: keras.Model, length: int, waveform: tf.Tensor) -> list[tf.Tensor]:
        hop = self.segment_hop or length
        short = tf.maximum(0, length - tf.shape(waveform)[1])
        waveform = tf.pad(waveform, [[0, 0], [0, short]])
        segments = tf.signal.frame(waveform, frame_length=length, frame_step=hop, axis=-1)  # [b, n_seg, length]
        batch, n_segments = tf.shape(segments)[0], tf.shape(segments)[1]
        maps = extractor(tf.reshape(segments, [-1, length, 1]), training=False)
        pooled = []
        for feature_map in maps if isinstance(maps, (list, tuple)) else [maps]:
            channels = int(feature_map.shape[-1])
            per_clip = tf.reshape(feature_map, [batch, n_segments, -1, channels])  # [b, s, positions, c]
            pooled += list(pool_segment_maps(per_clip))
        return pooled

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        waveform = tf.convert_to_tensor(inputs, tf.float32)
        features: list[tf.Tensor] = []
        for extractor, length in zip(self.extractors, self.segment_lengths, strict=True):  # over models, not audio
            features += self._pooled(extractor, length, waveform)
        return tf.concat(features, axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.n_features)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "extractors": [keras.saving.serialize_keras_object(e) for e in self.extractors],
            "segment_hop": self.segment_hop,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClipFeatures:
        config = dict(config)
        config["extractors"] = [keras.saving.deserialize_keras_object(e) for e in config["extractors"]]
        return cls(**config)
