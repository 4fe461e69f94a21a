"""Auralisation: learnt features turned back into sound.

For the 2D STFT CNN (Choi et al. 2015, Listing 1): waveform → STFT (the one
convention of :mod:`tfaural.spectral`) → magnitude in the model's input scaling →
deconvolution of the chosen features (:mod:`tfaural.deconv`) → back to a linear
magnitude → inverse STFT with the phase of the original. Two modes:

``phase``  (the paper's Listing 1) ``istft(D * exp(i∠X))``: the deconvolved map
           ``D`` is used as the magnitude and the original phase is attached.
``mask``   (the authors' released code) ``istft(D * X)``: the deconvolved map
           multiplies the original complex STFT, i.e. it acts as a soft mask.

**Log-compressed inputs.** If the model saw ``log(1 + C|X|)``, the deconvolved
map lives in that compressed domain. It is brought back to a linear magnitude
with the inverse compression, ``(exp(max(D, 0)) − 1) / C`` (negative values,
which have no magnitude meaning there, are clipped to 0). For a linear-input
model the map is used as it is (negative values flip the phase, as in the paper).

**Log-mel models** (musicnn's taggers, :class:`MelAuraliser`): the deconvolution ends in
the compressed log-mel domain ``log10(1 + C m)``; it is brought back to mel power, then to
a linear-frequency magnitude by the pseudo-inverse of the mel filterbank (or non-negative
least squares, :func:`mel_to_linear_power`), and reconstructed with the original phase
(or as a mask) like the STFT models.

For the raw-waveform SampleCNN family the 1D deconvolution already ends in the
waveform domain, so its output *is* the auralisation (no STFT involved) — a
capability the papers do not have.

Every output is peak-normalised per feature to 0.9 of full scale. **Silence in,
silence out**: a feature is flagged ``silent`` and returned as silence (zeros,
``peak`` 0), never amplified noise and never NaN, when its auralisation is all
zero, when its peak is at most :data:`SILENCE_RELATIVE` (−144 dB) of the input
waveform's peak, or when the input itself is digital silence (peak at most
:data:`INPUT_SILENCE_PEAK`, −120 dBFS). Without the last two rules the phase mode
turns the bias-driven deconvolution of an all-zero input (peaks around 1e-7, with
the phase of empty bins set to 1) into full-scale noise. The relative floor is
deliberately low: a deconvolution's gain is a product of the layers' weights, and
the genuine features of deep layers of a randomly initialised 3^9-SampleCNN
deconvolve to 1e-7..1e-6 of the input's level.

The features go through deconvolution *and* reconstruction in bounded chunks
(:func:`tfaural.deconv.map_feature_chunks`), so a request for many features of a
long clip holds one chunk's intermediate maps at a time, not all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfaural import linalg, spectral
from tfaural.config import ChoiConfig, MusicnnConfig
from tfaural.deconv import DeconvNet
from tfaural.errors import ModelError, ParameterError
from tfaural.models import config_from_model
from tfaural.models.layers import InputScaling

__all__ = [
    "MODES",
    "PEAK",
    "SILENCE_RELATIVE",
    "INPUT_SILENCE_PEAK",
    "Auralisation",
    "Auraliser",
    "auralise",
    "reconstruct",
    "normalise_peak",
    "MEL_INVERSIONS",
    "MelAuraliser",
    "auraliser_for",
    "auralise_mel",
    "log_mel_to_magnitude",
    "mel_to_linear_power",
]

MODES = ("phase", "mask")
PEAK = 0.9
#: A feature whose auralisation peaks at or below this fraction of the input's peak is silent (2**-24,
#: −144 dB: below float32's resolution next to the input's peak, and below the range of 24-bit audio).
SILENCE_RELATIVE = 2.0**-24
#: An input whose peak is at or below this is digital silence (2**-20, −120 dBFS: 24 dB under one step
#: of 16-bit audio); every feature of it is silent.
INPUT_SILENCE_PEAK = 2.0**-20


@dataclasses.dataclass(frozen=True)
class Auralisation:
    """The result of :func:`auralise`.

    Attributes:
        audio: float32 ``[batch, n_features, samples]``, peak-normalised to 0.9 (zeros if silent).
        silent: bool ``[batch, n_features]``: the auralisation is silence (see the module docstring).
        peak: float32 ``[batch, n_features]``: the peak before normalisation (the
            feature's output strength in audio units; 0 for silent features).
        deconvolved: The deconvolved maps (``[batch, k, freq, frames]`` for the
            Choi CNN, ``[batch, k, samples]`` for waveform models); ``None`` when not kept.
        spectrogram: float32 ``[batch, freq, frames]`` linear STFT magnitude of the
            input (``None`` for waveform models).
        activation: float32 ``[batch, n_features]``: each feature map's maximum
            activation on the input (how strongly the feature responded).
    """

    audio: tf.Tensor
    silent: tf.Tensor
    peak: tf.Tensor
    deconvolved: tf.Tensor | None
    spectrogram: tf.Tensor | None
    activation: tf.Tensor | None = None


def normalise_peak(
    audio: tf.Tensor, *, peak: float = PEAK, input_peak: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Scales each signal along the last axis to ``peak``; silent signals become zeros.

    Args:
        audio: float32 ``[batch, ..., samples]``.
        peak: Target peak amplitude.
        input_peak: float32 ``[batch]``: the peak of each input waveform. Given, a signal is
            also silent when its peak is at most ``SILENCE_RELATIVE * input_peak`` or the
            input's peak is at most :data:`INPUT_SILENCE_PEAK`; ``None``: only all-zero
            signals are silent.

    Returns:
        ``(normalised, silent, original_peak)``: ``silent`` bool ``[batch, ...]``,
        ``original_peak`` float32 ``[batch, ...]`` (0 where silent).
    """
    original = tf.reduce_max(tf.abs(audio), axis=-1)
    silent = tf.logical_not(original > 0)
    if input_peak is not None:
        level = tf.cast(input_peak, original.dtype)
        for _ in range(original.shape.rank - 1):
            level = level[..., tf.newaxis]
        quiet = tf.logical_or(level <= INPUT_SILENCE_PEAK, original <= SILENCE_RELATIVE * level)
        silent = tf.logical_or(silent, quiet)
    scale = tf.where(silent, tf.zeros_like(original), peak / tf.where(silent, tf.ones_like(original), original))
    return audio * scale[..., tf.newaxis], silent, tf.where(silent, tf.zeros_like(original), original)


def reconstruct(
    deconvolved: tf.Tensor,
    stft_matrix: tf.Tensor,
    *,
    mode: str | tf.Tensor,
    n_fft: int,
    hop_length: int,
    length: int | tf.Tensor,
) -> tf.Tensor:
    """Turns linear-magnitude maps into waveforms with the original STFT's phase.

    Args:
        deconvolved: float32 ``[batch, k, freq, frames]`` linear magnitudes.
        stft_matrix: complex64 ``[batch, freq, frames]``: the input's STFT.
        mode: ``"phase"`` (``D * exp(i∠X)``) or ``"mask"`` (``D * X``); a string scalar
            tensor picks the mode in-graph (anything but ``phase`` means ``mask``: validate first).
        n_fft: FFT size in samples.
        hop_length: Hop in samples.
        length: Output length in samples.

    Returns:
        float32 ``[batch, k, length]`` (not normalised).
    """
    stft_matrix = tf.cast(stft_matrix, tf.complex64)
    if isinstance(mode, (tf.Tensor, tf.Variable)):
        # Only the carrier depends on the mode: one inverse STFT in the graph, not one per branch.
        carrier = tf.cond(tf.equal(mode, "phase"), lambda: spectral.magphase(stft_matrix)[1], lambda: stft_matrix)
    else:
        _check_mode(mode)
        carrier = spectral.magphase(stft_matrix)[1] if mode == "phase" else stft_matrix
    complex_maps = tf.cast(deconvolved, tf.complex64) * carrier[:, tf.newaxis]
    return spectral.istft(complex_maps, n_fft=n_fft, hop_length=hop_length, length=length)


def _own_net(model: keras.Model, net: DeconvNet | None, **settings: Any) -> DeconvNet:
    """``net`` if it deconvolves ``model``, else a new :class:`DeconvNet` of ``model`` with ``settings``."""
    if net is None:
        return DeconvNet(model, **settings)
    if net.model is not model:
        raise ParameterError(f"net deconvolves model {net.model.name!r}, not {model.name!r}")
    return net


def _check_mode(mode: Any) -> None:
    if isinstance(mode, (tf.Tensor, tf.Variable)):
        return  # checked in-graph by the caller (the export's auralise signature)
    if mode not in MODES:
        raise ParameterError(f"mode={mode!r} is invalid: expected one of {MODES}")


def _batch_level_dtypes(
    waveform: tf.Tensor | np.ndarray, mode: str | tf.Tensor, keep_deconvolved: bool
) -> tuple[tf.Tensor, tf.Tensor, tuple[tf.DType, ...]]:
    """Checks ``mode``; returns the waveform as ``[batch, samples]``, each input's peak ``[batch]`` and the
    dtypes of the per-chunk results (``deconvolved``, ``audio``, ``silent``, ``peak``)."""
    _check_mode(mode)
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    if waveform.shape.rank == 1:
        waveform = waveform[tf.newaxis]
    level = tf.reduce_max(tf.abs(waveform), axis=-1)
    dtypes: tuple[tf.DType, ...] = (tf.float32, tf.bool, tf.float32)
    return waveform, level, ((tf.float32, *dtypes) if keep_deconvolved else dtypes)


class Auraliser:
    """Auralisation for one model (the deconvolution network is built once).

    Args:
        model: A Choi CNN or a SampleCNN-family waveform model.
        chunk_elements: Bound of the deconvolution's working set per chunk of features
            (see :meth:`tfaural.deconv.DeconvNet.__call__`; ``None``: the default).
        net: The deconvolution network of ``model`` to use (``None``: one of its own). Sharing one
            with other callers shares its per-layer walks, traced once inside graphs (an export's
            ``deconvolve`` and ``auralise`` signatures).

    Raises:
        ModelError: For the mel-frame baseline (its mel front end has no phase to reuse).
        ParameterError: If ``net`` deconvolves another model.
    """

    def __init__(self, model: keras.Model, *, chunk_elements: int | None = None, net: DeconvNet | None = None) -> None:
        self.net = _own_net(model, net)
        self.config: Any = config_from_model(model)
        self.chunk_elements = chunk_elements
        self.is_spectral = isinstance(self.config, ChoiConfig)
        if isinstance(self.config, MusicnnConfig):
            raise ModelError(f"model {model.name!r} takes mel power: auralise it with tfaural.auralise.MelAuraliser")
        if not self.is_spectral and getattr(self.config, "family", "samplecnn") == "mel-frame":
            raise ModelError(
                "the mel-frame baseline cannot be auralised: its mel front end discards the STFT phase; "
                "deconvolve it to mel spectrograms with tfaural.deconv instead"
            )

    def _prepare(
        self, waveform: tf.Tensor | np.ndarray, mode: str | tf.Tensor, keep_deconvolved: bool
    ) -> tuple[tf.Tensor, tf.Tensor | None, Any, tuple[tf.DType, ...]]:
        """``(model input, spectrogram or None, per-chunk auralisation, its dtypes)`` for ``waveform``."""
        waveform, level, dtypes = _batch_level_dtypes(waveform, mode, keep_deconvolved)
        if not self.is_spectral:  # waveform models: the deconvolution already is audio

            def finish_waveform(deconvolved: tf.Tensor) -> tuple[tf.Tensor, ...]:
                result = normalise_peak(deconvolved, input_peak=level)
                return (deconvolved, *result) if keep_deconvolved else result

            return waveform, None, finish_waveform, dtypes
        config = self.config
        assert isinstance(config, ChoiConfig)
        stft_matrix = spectral.stft(waveform, n_fft=config.n_fft, hop_length=config.hop_length)
        magnitude = tf.abs(stft_matrix)

        def finish_spectral(deconvolved: tf.Tensor) -> tuple[tf.Tensor, ...]:
            audio = reconstruct(
                to_linear_magnitude(deconvolved, config), stft_matrix, mode=mode, n_fft=config.n_fft,
                hop_length=config.hop_length, length=tf.shape(waveform)[-1],
            )
            result = normalise_peak(audio, input_peak=level)
            return (deconvolved, *result) if keep_deconvolved else result

        return magnitude, magnitude, finish_spectral, dtypes

    def model_input(self, waveform: tf.Tensor | np.ndarray) -> tf.Tensor:
        """What the model (and :attr:`net`) takes for ``waveform`` ``[batch, samples]``: the linear STFT
        magnitude (Choi CNN), the mel power (log-mel taggers) or the waveform itself."""
        return self._prepare(waveform, "phase", False)[0]

    @staticmethod
    def _result(outputs: Sequence[tf.Tensor], spectrogram: tf.Tensor | None, activation: tf.Tensor | None,
                keep_deconvolved: bool) -> Auralisation:
        if keep_deconvolved:
            deconvolved, audio, silent, peak = outputs
        else:
            (audio, silent, peak), deconvolved = outputs, None
        return Auralisation(audio, silent, peak, deconvolved, spectrogram, activation)

    def __call__(
        self,
        waveform: tf.Tensor | np.ndarray,
        *,
        layer: int | str,
        features: Sequence[int] | tf.Tensor | None = None,
        mode: str | tf.Tensor = "phase",
        keep_deconvolved: bool = True,
    ) -> Auralisation:
        """Auralises features of one layer for a batch of waveforms.

        The features are deconvolved and reconstructed in bounded chunks (module docstring).

        Args:
            waveform: float32 ``[batch, samples]`` at the model's sample rate.
            layer: A level (Choi: 1-5) or a layer name (:class:`~tfaural.deconv.DeconvNet`).
            features: Feature indices, each at most once; ``None``: all of the layer.
            mode: ``"phase"`` or ``"mask"`` (ignored for waveform models).
            keep_deconvolved: Also return the deconvolved maps (``False`` saves their memory).

        Returns:
            An :class:`Auralisation`.

        Raises:
            ParameterError: Invalid ``mode``, ``layer`` or ``features`` (out of range or repeated).
        """
        x, spectrogram, finish, dtypes = self._prepare(waveform, mode, keep_deconvolved)
        outputs, activation = self.net(
            x, layer=layer, features=features, return_activation=True, chunk_elements=self.chunk_elements,
            per_chunk=finish, per_chunk_dtypes=dtypes,
        )
        return self._result(outputs, spectrogram, activation, keep_deconvolved)

    def layers(
        self,
        waveform: tf.Tensor | np.ndarray,
        *,
        layers: Sequence[int | str] | None = None,
        features: Sequence[int] | tf.Tensor | None = None,
        mode: str = "phase",
        keep_deconvolved: bool = True,
    ) -> dict[int | str, Auralisation]:
        """Auralises several layers with one shared forward pass (``None``: every layer).

        Returns:
            ``{layer: Auralisation}``.
        """
        x, spectrogram, finish, dtypes = self._prepare(waveform, mode, keep_deconvolved)
        maps = self.net.deconvolve_layers(
            x, layers=layers, features=features, chunk_elements=self.chunk_elements, per_chunk=finish,
            per_chunk_dtypes=dtypes,
        )
        return {
            layer: self._result(outputs, spectrogram, self.net.last_activations[layer], keep_deconvolved)
            for layer, outputs in maps.items()
        }


#: Largest exponent the inverse compressions are given (``exp(80)`` and ``10^30`` leave float32
#: room for the filterbank products and the reconstruction): see :func:`_below_overflow`.
MAX_LOG = 80.0
MAX_LOG10 = 30.0


def _below_overflow(deconvolved: tf.Tensor, limit: float) -> tf.Tensor:
    """Shifts each map ``[..., rows, cols]`` down so that its maximum is at most ``limit``.

    A deconvolution carries the gains of every layer it passed, so its values in a log domain
    are not bounded by the input's: deep features of a real tagger reach tens to hundreds of
    "log units", whose inverse compression overflows float32 (inf, then NaN in the inverse
    STFT). Subtracting a constant in the log domain is a gain on the decompressed map (up to the
    ``-1`` of ``expm1``, negligible there), and every auralisation is peak-normalised, so the
    shift changes nothing audible; it applies only to maps whose maximum exceeds ``limit``.
    """
    top = tf.reduce_max(deconvolved, axis=[-2, -1], keepdims=True)
    return deconvolved - tf.nn.relu(top - limit)


def to_linear_magnitude(deconvolved: tf.Tensor, config: ChoiConfig) -> tf.Tensor:
    """Maps a deconvolution in the model's input scaling back to linear magnitude (module docstring)."""
    if config.input_scaling == "log":
        return spectral.log_decompress(_below_overflow(tf.nn.relu(deconvolved), MAX_LOG), c=config.log_c)
    return deconvolved


def auralise(
    model: keras.Model,
    waveform: tf.Tensor | np.ndarray,
    *,
    layer: int,
    features: Sequence[int] | tf.Tensor | None = None,
    mode: str = "phase",
) -> Auralisation:
    """Auralises features of one layer (see :class:`Auraliser`)."""
    return Auraliser(model)(waveform, layer=layer, features=features, mode=mode)


# ---------------------------------------------------------------------------------------------
# Log-mel models (musicnn's taggers and any model whose deconvolution ends in log-mel)

#: Ways from mel power back to linear-frequency power (see :func:`mel_to_linear_power`).
MEL_INVERSIONS = ("pinv", "nnls")
#: Projected-gradient iterations of the ``"nnls"`` inversion.
NNLS_ITERATIONS = 50


def mel_to_linear_power(
    mel_power: tf.Tensor,
    filterbank: np.ndarray,
    *,
    inversion: str = "pinv",
    iterations: int = NNLS_ITERATIONS,
) -> tf.Tensor:
    """Linear-frequency power whose mel projection approximates ``mel_power`` (non-negative).

    ``"pinv"``: the Moore–Penrose pseudo-inverse of the filterbank applied to the mel
    power, negative values clipped to 0 (one matrix product). ``"nnls"``: non-negative
    least squares, ``min ||F x - m||² s.t. x >= 0`` as ``librosa.feature.inverse.mel_to_stft``
    solves it, here by ``iterations`` steps of accelerated projected gradient (FISTA) from the
    clipped pseudo-inverse, in-graph. ``benchmarks/deconvnet_mtt_vgg.py`` measures both
    (and librosa's) for quality and speed; the default is the one chosen there.

    Args:
        mel_power: float32 ``[..., n_mels, frames]``.
        filterbank: ``[n_mels, n_freq]`` mel weights (:func:`tfaural.spectral.mel_filterbank`).
        inversion: ``"pinv"`` or ``"nnls"``.
        iterations: Iterations of ``"nnls"``.

    Returns:
        float32 ``[..., n_freq, frames]`` >= 0.

    Raises:
        ParameterError: For an unknown ``inversion`` or a filterbank that does not fit.
    """
    if inversion not in MEL_INVERSIONS:
        raise ParameterError(f"inversion={inversion!r} is invalid: expected one of {MEL_INVERSIONS}")
    weights = np.asarray(filterbank, dtype=np.float64)
    mel_power = tf.convert_to_tensor(mel_power, tf.float32)
    if weights.ndim != 2 or mel_power.shape[-2] not in (None, weights.shape[0]):
        raise ParameterError(f"the filterbank {weights.shape} does not fit mel power of shape {mel_power.shape}: "
                             "expected [n_mels, n_freq] with n_mels bands")
    start = tf.nn.relu(linalg.matmul(tf.constant(np.linalg.pinv(weights), tf.float32), mel_power))
    if inversion == "pinv":
        return start
    forward = tf.constant(weights, tf.float32)
    step = float(1.0 / np.linalg.norm(weights, 2) ** 2)  # 1 / Lipschitz constant of the gradient

    def body(i: tf.Tensor, x: tf.Tensor, y: tf.Tensor, t: tf.Tensor) -> tuple[tf.Tensor, ...]:
        gradient = linalg.matmul(forward, linalg.matmul(forward, y) - mel_power, transpose_a=True)
        x_next = tf.nn.relu(y - step * gradient)
        t_next = (1.0 + tf.sqrt(1.0 + 4.0 * t * t)) / 2.0
        return i + 1, x_next, x_next + ((t - 1.0) / t_next) * (x_next - x), t_next

    _, x, _, _ = tf.while_loop(lambda i, *_: i < iterations, body, (tf.constant(0), start, start, tf.constant(1.0)))
    return x


def log_mel_to_magnitude(
    deconvolved: tf.Tensor,
    filterbank: np.ndarray,
    *,
    log_c: float = spectral.MUSICNN_LOG_C,
    power: float = 2.0,
    inversion: str = "pinv",
) -> tf.Tensor:
    """Deconvolved log-mel maps → linear STFT magnitude.

    The compression ``log10(1 + C m)`` is inverted (negative values, which have no power
    meaning, clipped to 0; a map whose maximum exceeds :data:`MAX_LOG10` is shifted down to it
    first, a mere gain after decompression, instead of overflowing float32), the mel power
    brought back to linear frequencies (:func:`mel_to_linear_power`) and the ``power`` undone.

    Args:
        deconvolved: float32 ``[..., n_mels, frames]`` in the compressed log-mel domain.
        filterbank: ``[n_mels, n_freq]`` mel weights.
        log_c: The compression constant C.
        power: Exponent of the magnitude the mel spectrogram was made of (2: power).
        inversion: ``"pinv"`` or ``"nnls"``.

    Returns:
        float32 ``[..., n_freq, frames]`` >= 0.
    """
    mel_power = spectral.log10_decompress(_below_overflow(tf.nn.relu(deconvolved), MAX_LOG10), log_c)
    linear = mel_to_linear_power(mel_power, filterbank, inversion=inversion)
    if power == 1.0:
        return linear
    return tf.sqrt(linear) if power == 2.0 else tf.pow(linear, 1.0 / power)


class MelAuraliser(Auraliser):
    """Auralisation of a log-mel model (musicnn's taggers, or any model seeing log-compressed mel power).

    waveform → STFT (:mod:`tfaural.spectral`) → mel power → the model → deconvolution of the
    chosen features down to the log-mel domain (:class:`~tfaural.deconv.DeconvNet`) →
    :func:`log_mel_to_magnitude` → the original STFT phase (``mode="phase"``) or the
    original complex STFT as carrier of a soft mask (``mode="mask"``) → inverse STFT.
    Peak-normalised per feature with the silence rules of :func:`normalise_peak`; the
    features go down and are reconstructed in bounded chunks, as in :class:`Auraliser`.

    **Level in the log domain.** A deconvolution carries the gains of every layer it passed
    (batch normalisations above all), so its values are not log-mel values of any real sound:
    deep features of ``MTT_vgg`` come back at tens to a thousand "log10 units", whose literal
    decompression ``10^x`` overflows float32 and, where it does not, keeps only the single
    loudest bin. The deconvnet propagates patterns, not levels, so (``match_input_level``, the
    default) each feature's map is first scaled so that its maximum equals the input's own
    loudest compressed log-mel value: the feature is heard with the dynamic range of the music
    it came from. With ``match_input_level=False`` the map is decompressed as it is (shifted
    down only where it would overflow, :func:`log_mel_to_magnitude`).

    The model takes mel power ``[batch, n_mels, frames, 1]`` and compresses it itself: the
    deconvolution ends at the output of that compression layer (an
    :class:`~tfaural.models.layers.InputScaling` in ``"log10"`` mode, whose constant is
    used; another layer can be named with ``input_layer``, then ``log_c`` is required).

    Args:
        model: The log-mel model (e.g. ``tfaural.models.musicnn_tagger``).
        sample_rate: Sample rate in Hz of the waveforms (``None``: the model config's).
        n_fft: FFT size (``None``: the config's).
        hop_length: STFT hop (``None``: the config's).
        n_mels: Mel bands (``None``: the config's).
        filterbank: ``[n_mels, n_fft // 2 + 1]`` mel weights (``None``: Slaney mel, area
            normalised, :func:`tfaural.spectral.mel_filterbank`, librosa's defaults).
        power: Exponent of the magnitude in the mel spectrogram (2: power).
        log_c: The compression constant (``None``: read from the compression layer).
        inversion: ``"pinv"`` or ``"nnls"`` (:func:`mel_to_linear_power`).
        method: The deconvolution's rule at activations (:data:`tfaural.deconv.METHODS`).
        input_layer: The compression layer (``None``: the model's front end).
        chunk_elements: Bound of the deconvolution's working set per chunk of features
            (``None``: the default).
        match_input_level: Scale each deconvolved map to the input's loudest log-mel value
            before decompression (see above).
        net: A deconvolution network of ``model`` to share (:class:`Auraliser`; ``None``: one of
            its own with ``method`` and ``input_layer``, which are then ignored).

    Raises:
        ModelError: If the deconvolution does not end in a log-compressed mel domain.
        ParameterError: For missing or invalid settings.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        sample_rate: int | None = None,
        n_fft: int | None = None,
        hop_length: int | None = None,
        n_mels: int | None = None,
        filterbank: np.ndarray | None = None,
        power: float = 2.0,
        log_c: float | None = None,
        inversion: str = "pinv",
        method: str = "deconvnet",
        input_layer: str | None = None,
        chunk_elements: int | None = None,
        match_input_level: bool = True,
        net: DeconvNet | None = None,
    ) -> None:
        config = getattr(model, "tfaural_config", None)
        settings = {"sample_rate": sample_rate, "n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels}
        for name, value in settings.items():
            if value is None:
                settings[name] = getattr(config, name, None)
            if not isinstance(settings[name], int) or settings[name] <= 0:  # type: ignore[operator]
                raise ParameterError(f"{name}={settings[name]!r} is invalid: expected a positive integer "
                                     "(pass it, or use a model whose config has it)")
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = (int(settings[k]) for k in settings)  # type: ignore[arg-type]
        if inversion not in MEL_INVERSIONS:
            raise ParameterError(f"inversion={inversion!r} is invalid: expected one of {MEL_INVERSIONS}")
        self.net = _own_net(model, net, method=method, input_layer=input_layer)
        self.config = config
        self.chunk_elements = chunk_elements
        self.is_spectral = True
        self.log_c = self._compression(model, log_c)
        if filterbank is None:
            filterbank = spectral.mel_filterbank(sample_rate=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels)
        self.filterbank = np.asarray(filterbank, np.float32)
        if self.filterbank.shape != (self.n_mels, self.n_fft // 2 + 1):
            raise ParameterError(f"filterbank has shape {self.filterbank.shape}; expected "
                                 f"({self.n_mels}, {self.n_fft // 2 + 1}) for n_mels={self.n_mels}, n_fft={self.n_fft}")
        self.power = float(power)
        self.inversion = inversion
        self.match_input_level = bool(match_input_level)

    def _compression(self, model: keras.Model, log_c: float | None) -> float:
        name = self.net.input_layer
        layer = model.get_layer(name) if name is not None else None
        if isinstance(layer, InputScaling) and layer.mode == "log10":
            return float(layer.c if log_c is None else log_c)
        if layer is not None and log_c is not None:
            return float(log_c)
        raise ModelError(
            f"model {model.name!r}: its deconvolution ends at {name or 'the model input'!r}, not at a log10(1 + C x) "
            "compression of mel power; name the compression layer with input_layer= (and pass log_c=)"
        )

    def mel_input(self, waveform: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(complex STFT [batch, freq, frames], mel power [batch, n_mels, frames])`` of ``[batch, samples]``."""
        stft_matrix = spectral.stft(waveform, n_fft=self.n_fft, hop_length=self.hop_length)
        magnitude = tf.abs(stft_matrix)
        scaled = magnitude if self.power == 1.0 else tf.pow(magnitude, self.power)
        mel = tf.einsum("mf,...ft->...mt", tf.constant(self.filterbank), scaled)
        return stft_matrix, mel

    def _prepare(
        self, waveform: tf.Tensor | np.ndarray, mode: str | tf.Tensor, keep_deconvolved: bool
    ) -> tuple[tf.Tensor, tf.Tensor | None, Any, tuple[tf.DType, ...]]:
        waveform, level, dtypes = _batch_level_dtypes(waveform, mode, keep_deconvolved)
        stft_matrix, mel = self.mel_input(waveform)

        # The input's loudest compressed log-mel value, [batch, 1, 1, 1]: each deconvolved map is
        # scaled to it before decompression (see the class docstring).
        input_top = tf.reduce_max(spectral.log10_compress(mel, self.log_c), axis=[-2, -1])[:, tf.newaxis, tf.newaxis,
                                                                                           tf.newaxis]

        def finish(deconvolved: tf.Tensor) -> tuple[tf.Tensor, ...]:
            scaled = deconvolved
            if self.match_input_level:
                top = tf.reduce_max(deconvolved, axis=[-2, -1], keepdims=True)
                scaled = deconvolved * tf.math.divide_no_nan(input_top, tf.where(top > 0, top, tf.zeros_like(top)))
            linear = log_mel_to_magnitude(scaled, self.filterbank, log_c=self.log_c, power=self.power,
                                          inversion=self.inversion)
            audio = reconstruct(linear, stft_matrix, mode=mode, n_fft=self.n_fft, hop_length=self.hop_length,
                                length=tf.shape(waveform)[-1])
            result = normalise_peak(audio, input_peak=level)
            return (deconvolved, *result) if keep_deconvolved else result

        return mel[..., tf.newaxis], mel, finish, dtypes


def auraliser_for(model: keras.Model, *, chunk_elements: int | None = None,
                  net: DeconvNet | None = None) -> Auraliser:
    """The auraliser of a tfaural model: :class:`MelAuraliser` for the imported log-mel taggers
    (:class:`~tfaural.config.MusicnnConfig`), :class:`Auraliser` otherwise (``net``: a deconvolution
    network of ``model`` to share, see :class:`Auraliser`)."""
    if isinstance(config_from_model(model), MusicnnConfig):
        return MelAuraliser(model, chunk_elements=chunk_elements, net=net)
    return Auraliser(model, chunk_elements=chunk_elements, net=net)


def auralise_mel(
    model: keras.Model,
    waveform: tf.Tensor | np.ndarray,
    *,
    layer: int | str,
    features: Sequence[int] | tf.Tensor | None = None,
    mode: str = "phase",
    inversion: str = "pinv",
) -> Auralisation:
    """Auralises features of one layer of a log-mel model (see :class:`MelAuraliser`)."""
    return MelAuraliser(model, inversion=inversion)(waveform, layer=layer, features=features, mode=mode)
