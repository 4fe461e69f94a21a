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

**Log-mel models** (musicnn's taggers, any model on a log-mel spectrogram made before it, or
with a ``keras.layers.MelSpectrogram`` of its own: :class:`MelAuraliser`): the deconvolution ends
in the compressed log-mel domain (``log10(1 + C m)``, decibels, ``ln(m + ε)``, ... of
:mod:`tfaural.spectral`); it is brought back to mel power by a level rule, then to
a linear-frequency magnitude by the pseudo-inverse of the mel filterbank (or non-negative
least squares, :func:`mel_to_linear_power`), and reconstructed with the original phase
(or as a mask) like the STFT models. A model with a ``keras.layers.STFTSpectrogram`` of its own
is heard the same way with no mel bands, through that layer's own frames and their exact
inverse (:class:`KerasFrames`).

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

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfaural import linalg, spectral
from tfaural.audio import SILENCE_PEAK
from tfaural.config import MEL_LAYOUTS, ChoiConfig, FrontEndConfig, KerasConfig, MusicnnConfig
from tfaural.deconv import DeconvNet
from tfaural.errors import ModelError, ParameterError, TfauralError
from tfaural.models import config_from_model
from tfaural.models.layers import InputScaling

__all__ = [
    "MODES",
    "PEAK",
    "SILENCE_RELATIVE",
    "INPUT_SILENCE_PEAK",
    "Auralisation",
    "Auraliser",
    "Prepared",
    "auralise",
    "reconstruct",
    "normalise_peak",
    "MEL_INVERSIONS",
    "MEL_LAYOUTS",
    "MelAuraliser",
    "KerasFrames",
    "KERAS_STFT_MODES",
    "auraliser_for",
    "auraliser_for_front_end",
    "deconv_net_for",
    "front_end_filterbank",
    "fixed_input_samples",
    "longest_clip_samples",
    "shortest_clip_samples",
    "checked_clip_samples",
    "SHORTEST_CLIP_LIMIT",
    "WALK_TENSORS",
    "walk_bytes",
    "ends_at_a_waveform",
    "auralise_mel",
    "log_mel_to_magnitude",
    "mel_to_linear_power",
]

MODES = ("phase", "mask")
PEAK = 0.9
#: A feature whose auralisation peaks at or below this fraction of the input's peak is silent (2**-24,
#: −144 dB: below float32's resolution next to the input's peak, and below the range of 24-bit audio).
SILENCE_RELATIVE = 2.0**-24
#: An input whose peak is at or below this is silence (2**-20, −120 dBFS: 24 dB under one step of 16-bit
#: audio; :data:`tfaural.audio.SILENCE_PEAK`, at which the jobs refuse a track); every feature of it is silent.
INPUT_SILENCE_PEAK = SILENCE_PEAK


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


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What auralising any layer of one batch of waveforms starts from (:meth:`Auraliser.prepare`).

    Attributes:
        model_input: What the model (and its deconvolution) takes for the waveforms.
        spectrogram: The input's spectrogram (linear STFT magnitude or mel power), or ``None`` for a waveform model.
        finish: A chunk of deconvolved maps ``[batch, kc, ...]`` -> its per-chunk results (deconvolved maps if
            kept, audio ``[batch, kc, samples]``, silent and peak ``[batch, kc]``).
        dtypes: The dtypes of ``finish``'s results.
        keep_deconvolved: Whether ``finish`` returns the deconvolved maps first.
    """

    model_input: tf.Tensor
    spectrogram: tf.Tensor | None
    finish: Callable[[tf.Tensor], tuple[tf.Tensor, ...]]
    dtypes: tuple[tf.DType, ...]
    keep_deconvolved: bool


def _traced_once(finish: Callable[[tf.Tensor], tuple[tf.Tensor, ...]]) -> Callable[[tf.Tensor], tuple[tf.Tensor, ...]]:
    """``finish`` as one graph function, traced at its first call and called by every later one.

    An export's ``auralise`` signature auralises each of the model's layers in a branch of its own, each
    with a loop over chunks of features that calls ``finish`` (the reconstruction of a chunk's audio from
    its deconvolved maps: an inverse STFT, for log-mel models a mel inversion too). Traced inline, that
    reconstruction was traced again in every branch; as a function of its own it is traced once and its
    calls share it (as the layers' walks are, ``tfaural.deconv.DeconvNet._walk_function``): the export is
    traced faster and its graph is smaller. The function's input is the chunk with its batch and feature
    axes left unknown; a chunk of another rank or other trailing sizes gets a function of its own. Grappler
    inlines the calls, so the computation is the one traced inline.
    """
    functions: dict[str, Any] = {}

    def call(deconvolved: tf.Tensor) -> tuple[tf.Tensor, ...]:
        spec = tf.TensorSpec([None, None, *deconvolved.shape[2:]], deconvolved.dtype)
        key = repr(spec)
        if key not in functions:
            functions[key] = tf.function(finish, autograph=False).get_concrete_function(spec)
        return tuple(functions[key](deconvolved))

    return call


def reconstruct(
    deconvolved: tf.Tensor,
    stft_matrix: tf.Tensor,
    *,
    mode: str | tf.Tensor,
    n_fft: int,
    hop_length: int,
    length: int | tf.Tensor,
    inverse: Callable[[tf.Tensor, int | tf.Tensor], tf.Tensor] | None = None,
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
        inverse: The inverse of the STFT that made ``stft_matrix``: complex ``[batch, k, freq, frames]`` and a
            length to float32 ``[batch, k, length]`` (``None``: :func:`tfaural.spectral.istft` of ``n_fft`` and
            ``hop_length``, the library's centred STFT).

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
    if inverse is not None:
        return inverse(complex_maps, length)
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


def ends_at_a_waveform(net: DeconvNet) -> bool:
    """Whether ``net``'s walk ends at a waveform model input ``[batch, samples(, 1)]`` (no front end)."""
    shape = net.domain_shape
    return net.front_end is None and (len(shape) == 2 or (len(shape) == 3 and shape[-1] == 1))


class Auraliser:
    """Auralisation for one model (the deconvolution network is built once).

    Args:
        model: A Choi CNN or a SampleCNN-family waveform model, or any Keras CNN on the waveform
            ``[batch, samples(, 1)]`` (its deconvolution is the sound).
        chunk_elements: Bound of the deconvolution's working set per chunk of features
            (see :meth:`tfaural.deconv.DeconvNet.__call__`; ``None``: the default).
        net: The deconvolution network of ``model`` to use (``None``: one of its own). Sharing one
            with other callers shares its per-layer walks, traced once inside graphs (an export's
            ``deconvolve`` and ``auralise`` signatures).

    Raises:
        ModelError: For the mel-frame baseline (its mel front end has no phase to reuse), or a model
            tfaural did not build that does not take the waveform.
        ParameterError: If ``net`` deconvolves another model.
    """

    def __init__(self, model: keras.Model, *, chunk_elements: int | None = None, net: DeconvNet | None = None) -> None:
        self.net = _own_net(model, net)
        self.chunk_elements = chunk_elements
        self.config: Any = getattr(model, "tfaural_config", None)
        #: The model's sample rate in Hz (``None`` for a waveform model tfaural did not build, until told).
        self.sample_rate: int | None = getattr(self.config, "sample_rate", None)
        if self.config is None:  # a model tfaural did not build: it must take the waveform itself
            shape = self.net.domain_shape
            if not ends_at_a_waveform(self.net):
                raise ModelError(
                    f"model {model.name!r} carries no tfaural config and its deconvolution does not end at a "
                    f"waveform [batch, samples(, 1)] input (it ends at {self.net.input_layer or 'its input'}, shape "
                    f"{shape}): auralise a spectrogram model with tfaural.auralise.MelAuraliser"
                )
            self.is_spectral = False
            return
        self.config = config_from_model(model)
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

    def prepare(
        self, waveform: tf.Tensor | np.ndarray, *, mode: str | tf.Tensor = "phase", keep_deconvolved: bool = True
    ) -> Prepared:
        """The part of :meth:`__call__` that does not depend on the layer, for :meth:`auralise_prepared`.

        It holds the model's input and (for spectral models) the STFT whose phase the audio takes. A graph
        that auralises several layers of the same waveforms (an export's ``auralise`` signature, one branch
        per layer) computes it once, and the per-chunk reconstruction is traced once for all of them
        (:func:`_traced_once`).

        Args:
            waveform: float32 ``[batch, samples]`` at the model's sample rate.
            mode: ``"phase"`` or ``"mask"`` (ignored for waveform models).
            keep_deconvolved: Also return the deconvolved maps (``False`` saves their memory).

        Raises:
            ParameterError: Invalid ``mode``.
        """
        x, spectrogram, finish, dtypes = self._prepare(waveform, mode, keep_deconvolved)
        if tf.inside_function():
            finish = _traced_once(finish)
        return Prepared(x, spectrogram, finish, dtypes, keep_deconvolved)

    def auralise_prepared(
        self, prepared: Prepared, *, layer: int | str, features: Sequence[int] | tf.Tensor | None = None
    ) -> Auralisation:
        """Auralises ``features`` of ``layer`` from :meth:`prepare`'s result (see :meth:`__call__`)."""
        with self._explained(prepared.model_input):
            outputs, activation = self.net(
                prepared.model_input, layer=layer, features=features, return_activation=True,
                chunk_elements=self.chunk_elements, per_chunk=prepared.finish, per_chunk_dtypes=prepared.dtypes,
            )
        return self._result(outputs, prepared.spectrogram, activation, prepared.keep_deconvolved)

    def model_input(self, waveform: tf.Tensor | np.ndarray) -> tf.Tensor:
        """What the model (and :attr:`net`) takes for ``waveform`` ``[batch, samples]``: the linear STFT
        magnitude (Choi CNN), the mel power (log-mel taggers) or the waveform itself, with the model's
        trailing channel axis if it has one."""
        x = self._prepare(waveform, "phase", False)[0]
        expected = tuple(self.net.model.inputs[0].shape)
        if x.shape.rank == len(expected) - 1 and expected[-1] == 1:
            x = x[..., tf.newaxis]
        return x

    def _failure_hint(self, x: tf.Tensor) -> str | None:
        """Why the model may have refused its input ``x`` (``None``: nothing to add to its own error)."""
        del x
        return None

    @contextlib.contextmanager
    def _explained(self, x: tf.Tensor) -> Iterator[None]:
        """Turns the model's own refusal of ``x`` into a :class:`ParameterError` saying why, where known."""
        try:
            yield
        except TfauralError:
            raise
        except (ValueError, tf.errors.InvalidArgumentError) as error:
            hint = self._failure_hint(x)
            if hint is None:
                raise
            raise ParameterError(f"{hint} ({type(error).__name__}: {str(error).strip().splitlines()[0]})") from error

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
        return self.auralise_prepared(self.prepare(waveform, mode=mode, keep_deconvolved=keep_deconvolved),
                                      layer=layer, features=features)

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
        with self._explained(x):
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


def _undo_power(linear: tf.Tensor, power: float) -> tf.Tensor:
    """``linear ** (1 / power)``: a power spectrogram's magnitude (``power`` 2), or the magnitude itself (1)."""
    if power == 1.0:
        return linear
    return tf.sqrt(linear) if power == 2.0 else tf.pow(linear, 1.0 / power)


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
    return _undo_power(mel_to_linear_power(mel_power, filterbank, inversion=inversion), power)


_COMPRESSIONS: tuple[type[Any], ...] = (spectral.Log1p, spectral.LogOffset, spectral.Decibels, spectral.Linear)


class MelAuraliser(Auraliser):
    """Auralisation of a log-mel model: musicnn's taggers, or any model that sees a compressed mel spectrogram.

    waveform → STFT (:mod:`tfaural.spectral`) → mel power → the model → deconvolution of the
    chosen features down to the compressed mel spectrogram (:class:`~tfaural.deconv.DeconvNet`) →
    mel power (the level rule below) → linear-frequency magnitude (:func:`mel_to_linear_power`) →
    the original STFT phase (``mode="phase"``) or the original complex STFT as carrier of a soft
    mask (``mode="mask"``) → inverse STFT. Peak-normalised per feature with the silence rules of
    :func:`normalise_peak`; the features go down and are reconstructed in bounded chunks, as in
    :class:`Auraliser`.

    **What the model takes.** Three kinds of model:

    * **mel power that it compresses itself**: musicnn's taggers (their
      :class:`~tfaural.models.layers.InputScaling` front end is found, and its compression read),
      or a model whose compression layer is named with ``input_layer=`` and described with
      ``compression=`` (or ``log_c=`` for ``log10(1 + C m)``);
    * **the compressed mel spectrogram itself** (the model's input is the log-mel a user's own
      preprocessing made): ``compression=`` says how, and the auraliser compresses the mel power
      the same way before the model, e.g. ``spectral.Decibels()`` for
      ``librosa.power_to_db(m, top_db=80)``, ``spectral.Decibels(ref="max")`` for ``ref=np.max``,
      ``spectral.LogOffset(0.001)`` for YAMNet's ``ln(m + 0.001)`` (of mel magnitude: ``power=1``, and
      its HTK bands: ``filterbank=spectral.mel_filterbank(..., fmin=125, fmax=7500, htk=True, norm=None)``);
    * **the waveform, through a** ``keras.layers.MelSpectrogram`` **layer** of its own: everything
      (sample rate, FFT, hop, bands, filterbank, power, dB) is read from that layer, whose frames
      are tfaural's (centred, periodic Hann window of ``n_fft``);
    * **the waveform, through a** ``keras.layers.STFTSpectrogram`` **layer** of its own (mode
      ``magnitude`` or ``log``): only ``sample_rate`` is given; the STFT's own bins are the "bands"
      (the identity filterbank), and its frames, window and scale are the layer's
      (:class:`KerasFrames`: not tfaural's centred STFT), as is the inverse that hears them.

    A compression layer must act bin by bin (a ``Lambda`` of ``log``, say); the deconvolution ends
    at its output. A model that compresses inside but is not told so (no ``input_layer=``) would be
    deconvolved through the compression to mel power and then read as compressed: name the layer.

    **Layout.** The mel spectrogram in the model may be ``[n_mels, frames]`` (musicnn, Keras's
    ``MelSpectrogram``) or ``[frames, n_mels]`` (YAMNet's and VGGish's patches, 1D CNNs over
    time with the bands as channels), with or without a trailing channel axis; ``layout="auto"``
    takes the one whose axis has ``n_mels`` sizes. A model of fixed-size patches takes clips whose
    frame count fits (a :class:`~tfaural.errors.ParameterError` says which lengths do).
    Deconvolved maps are returned as ``[batch, k, n_mels, frames]`` whatever the layout.

    **Level.** A deconvolution carries the gains of every layer it passed (batch normalisations
    above all), so its values are not log-mel values of any real sound: deep features of
    ``MTT_vgg`` come back at tens to a thousand "log10 units", whose literal decompression overflows
    float32 and, where it does not, keeps only the single loudest bin. The deconvnet propagates
    patterns, not levels. Every compression of :mod:`tfaural.spectral` is a log with a floor, so it has
    a *silence* (its value for no power: 0 for ``log10(1 + C m)``, ``ln 0.001`` for
    ``ln(m + 0.001)``, ``-80`` dB under the top for ``top_db=80``) and an exact way back from a
    rise above that silence to the power (:meth:`spectral.Log1p.expand`). Each feature's map is
    rectified and read as a rise above silence; with ``match_input_level`` (the default) it is
    first scaled so that its maximum equals the input's own greatest rise (its loudest bin above
    silence): the feature is heard with the dynamic range that the model's compression gives the
    music it came from. For ``log10(1 + C m)`` this is the map scaled to the input's loudest
    log-mel value. With ``match_input_level=False`` the map is taken as a rise as it is (shifted
    down only where it would overflow float32, as in :func:`log_mel_to_magnitude`).

    Args:
        model: The log-mel model (e.g. ``tfaural.models.musicnn_tagger``).
        sample_rate: Sample rate in Hz of the waveforms (``None``: the model config's or its
            ``MelSpectrogram`` layer's).
        n_fft: FFT size (``None``: the config's or the layer's).
        hop_length: STFT hop (``None``: the config's or the layer's).
        n_mels: Mel bands (``None``: the config's or the layer's).
        filterbank: ``[n_mels, n_fft // 2 + 1]`` mel weights (``None``: the layer's, or Slaney mel, area
            normalised, :func:`tfaural.spectral.mel_filterbank`, librosa's defaults), or ``"linear"``: no mel
            bands, the model sees the STFT's own ``n_fft // 2 + 1`` bins (a CNN on a dB STFT, say).
        power: Exponent of the magnitude in the mel spectrogram (``None``: the layer's, else 2: power).
        log_c: Shorthand for ``compression=spectral.Log1p(log_c)``: ``log10(1 + log_c m)``.
        compression: What the model sees of the mel power (:data:`tfaural.spectral.Compression`;
            ``None``: read from its front end).
        layout: ``"auto"``, ``"mels_frames"`` or ``"frames_mels"`` (see above).
        inversion: ``"pinv"`` or ``"nnls"`` (:func:`mel_to_linear_power`).
        method: The deconvolution's rule at activations (:data:`tfaural.deconv.METHODS`).
        input_layer: The compression layer (``None``: the model's front end, see
            :class:`~tfaural.deconv.DeconvNet`).
        chunk_elements: Bound of the deconvolution's working set per chunk of features
            (``None``: the default).
        match_input_level: Scale each deconvolved map to the input's greatest rise above silence
            before the way back to power (see above).
        net: A deconvolution network of ``model`` to share (:class:`Auraliser`; ``None``: one of
            its own with ``method`` and ``input_layer``, which are then ignored).
        frames: For a spectrogram made outside the model by ``tf.signal.stft`` (not centred):
            :meth:`KerasFrames.tf_signal` of the same ``n_fft`` and ``hop_length`` (``None``: tfaural's
            centred STFT). The excerpt's STFT and the inverse that hears a map are then those frames'.
        n_mfcc: The model sees the first ``n_mfcc`` MFCCs of the compressed mel spectrogram
            (``librosa.feature.mfcc``: the orthonormal DCT-II over the bands, no liftering) instead of the
            spectrogram (``None``). A map is taken back to the bands by the transposed DCT (``librosa.feature.
            inverse.mfcc_to_mel``'s inverse DCT: the coefficients left out are zero), then heard as above.

    Attributes:
        takes: What the model takes: ``"mel power"``, ``"compressed mel"`` or ``"waveform"`` (see above).
        compression: What the model sees of the mel power (:data:`tfaural.spectral.Compression`).
        layout: ``"mels_frames"`` or ``"frames_mels"``: the mel spectrogram's layout in the model.
        frames: The frame count the model is built for (``None``: any).

    Raises:
        ModelError: If the model's input domain is not a mel spectrogram of a kind above (named).
        ParameterError: For missing, conflicting or invalid settings.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        sample_rate: int | None = None,
        n_fft: int | None = None,
        hop_length: int | None = None,
        n_mels: int | None = None,
        filterbank: np.ndarray | str | None = None,
        power: float | None = None,
        log_c: float | None = None,
        compression: spectral.Compression | None = None,
        layout: str = "auto",
        inversion: str = "pinv",
        method: str = "deconvnet",
        input_layer: str | None = None,
        chunk_elements: int | None = None,
        match_input_level: bool = True,
        net: DeconvNet | None = None,
        frames: KerasFrames | None = None,
        n_mfcc: int | None = None,
    ) -> None:
        if inversion not in MEL_INVERSIONS:
            raise ParameterError(f"inversion={inversion!r} is invalid: expected one of {MEL_INVERSIONS}")
        if layout not in MEL_LAYOUTS:
            raise ParameterError(f"layout={layout!r} is invalid: expected one of {MEL_LAYOUTS}")
        if log_c is not None:
            if compression is not None:
                raise ParameterError("pass log_c= or compression=, not both (log_c=C is compression=spectral.Log1p(C))")
            compression = spectral.Log1p(log_c)
        if compression is not None and not isinstance(compression, _COMPRESSIONS):
            raise ParameterError(f"compression={compression!r} is invalid: expected one of tfaural.spectral's "
                                 "Log1p, LogOffset, Decibels or Linear")
        self.net = _own_net(model, net, method=method, input_layer=input_layer)
        self.config = getattr(model, "tfaural_config", None)
        self.chunk_elements = chunk_elements
        self.is_spectral = True
        self.inversion = inversion
        self.match_input_level = bool(match_input_level)
        given: dict[str, Any] = {"sample_rate": sample_rate, "n_fft": n_fft, "hop_length": hop_length,
                                 "n_mels": n_mels, "power": power, "compression": compression, "filterbank": filterbank}
        front = self.net.front_end
        #: Frames that are not centred: the model's own keras.layers.STFTSpectrogram's, or tf.signal.stft's of a
        #: spectrogram made outside it (``frames``); None: tfaural's centred STFT.
        self.keras_frames: KerasFrames | None = None
        if isinstance(front, keras.layers.MelSpectrogram):
            self.takes = "waveform"
            settings = _keras_mel_settings(front, model)
            for name, value in given.items():
                if value is not None and not _same(value, settings[name]):
                    raise ParameterError(f"{name}={value!r} conflicts with the model's MelSpectrogram layer "
                                         f"{front.name!r}, which has {name}={settings[name]!r}: leave it out")
        elif isinstance(front, keras.layers.STFTSpectrogram):
            self.takes = "waveform"
            self.keras_frames = KerasFrames.of(front, model)
            extra = [name for name, value in given.items() if value is not None and name != "sample_rate"]
            if extra:
                raise ParameterError(f"{', '.join(extra)}: the model's STFTSpectrogram layer {front.name!r} makes "
                                     "its own spectrogram; pass only sample_rate")
            if not (isinstance(sample_rate, int) and sample_rate > 0):  # as _given_settings checks it
                raise ParameterError(f"sample_rate={sample_rate!r} is invalid: the model's STFTSpectrogram layer "
                                     f"{front.name!r} does not know its rate; pass it (a positive integer, Hz)")
            settings = self.keras_frames.settings(int(sample_rate))
        else:
            self.takes = "compressed mel" if front is None else "mel power"
            settings = self._given_settings(model, given)
            if frames is not None:  # a spectrogram made outside the model by tf.signal.stft
                if (frames.fft_length, frames.frame_step) != (settings["n_fft"], settings["hop_length"]):
                    raise ParameterError(f"frames of n_fft={frames.fft_length}, hop {frames.frame_step} conflict "
                                         f"with n_fft={settings['n_fft']}, hop_length={settings['hop_length']}")
                self.keras_frames = frames
        if frames is not None and self.keras_frames is not frames:
            raise ParameterError("frames= describes a spectrogram made outside the model; this model makes its own "
                                 "from the waveform: leave it out")
        self.sample_rate: int = int(settings["sample_rate"])
        self.n_fft, self.hop_length, self.n_mels = (int(settings[k]) for k in ("n_fft", "hop_length", "n_mels"))
        self.power = float(settings["power"])
        if not self.power > 0:
            raise ParameterError(f"power={power!r} is invalid: expected a positive exponent")
        self.compression: spectral.Compression = settings["compression"]
        bank = settings["filterbank"]
        if bank is None:
            bank = spectral.mel_filterbank(sample_rate=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels)
        elif isinstance(bank, str):  # "linear": the STFT's bins themselves (the pseudo-inverse is the identity)
            bank = np.eye(self.n_fft // 2 + 1, dtype=np.float32)
        self.filterbank = np.asarray(bank, np.float32)
        if self.filterbank.shape != (self.n_mels, self.n_fft // 2 + 1):
            raise ParameterError(f"filterbank has shape {self.filterbank.shape}; expected "
                                 f"({self.n_mels}, {self.n_fft // 2 + 1}) for n_mels={self.n_mels}, n_fft={self.n_fft}")
        #: float32 ``[n_mfcc, n_mels]``: the DCT rows the model sees (``None``: the bands themselves).
        self.cepstrum: np.ndarray | None = None
        if n_mfcc is not None:
            if self.takes != "compressed mel":
                raise ParameterError(f"n_mfcc={n_mfcc!r}: MFCCs are taken of a compressed mel spectrogram made "
                                     "outside the model (pass compression=, not a front end of the model's own)")
            if not (isinstance(n_mfcc, int) and 1 <= n_mfcc <= self.n_mels):
                raise ParameterError(f"n_mfcc={n_mfcc!r} is invalid: expected 1 to n_mels={self.n_mels} coefficients")
            self.cepstrum = spectral.dct_matrix(self.n_mels)[:n_mfcc]
        self.layout, self._channel_axis, self.frames = self._layout(model, layout)

    @property
    def bands(self) -> int:
        """Size of the model's band axis: ``n_mfcc`` for an MFCC model, else ``n_mels``."""
        return self.n_mels if self.cepstrum is None else int(self.cepstrum.shape[0])

    def _given_settings(self, model: keras.Model, given: dict[str, Any]) -> dict[str, Any]:
        """The settings of a model that takes mel power or a compressed mel spectrogram: those given, else its
        tfaural config's; the compression given, else its front end's."""
        front = self.net.front_end
        model_input = tuple(self.net.model.inputs[0].shape)
        if front is not None and model_input != self.net.domain_shape:
            raise ModelError(
                f"model {model.name!r}: its deconvolution ends at layer {front.name!r} ({type(front).__name__}, "
                f"shape {self.net.domain_shape}), which is not a bin-by-bin compression of the model's input "
                f"(shape {model_input}); MelAuraliser hears models that take mel power, a compressed mel "
                "spectrogram, or the waveform through keras.layers.MelSpectrogram (deconvolve others with "
                "tfaural.deconv)"
            )
        settings = dict(given)
        linear = isinstance(given["filterbank"], str)
        if linear and given["filterbank"] != "linear":
            raise ParameterError(f"filterbank={given['filterbank']!r} is invalid: expected weights or 'linear'")
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            value = settings[name] if settings[name] is not None else getattr(self.config, name, None)
            if name == "n_mels" and value is None and linear and isinstance(settings["n_fft"], int):
                value = settings["n_fft"] // 2 + 1  # the STFT's own bins
            if not isinstance(value, int) or value <= 0:
                raise ParameterError(f"{name}={value!r} is invalid: expected a positive integer "
                                     "(pass it, or use a model whose config has it)")
            settings[name] = value
        settings["power"] = 2.0 if given["power"] is None else given["power"]
        if given["compression"] is None:
            settings["compression"] = _front_compression(model, front)
        return settings

    def _layout(self, model: keras.Model, layout: str) -> tuple[str, bool, int | None]:
        """``(layout, whether the domain has a trailing channel axis, its fixed frame count or None)``."""
        shape = self.net.domain_shape[1:]
        where = f"the input domain of model {model.name!r} ({self.net.input_layer or 'its input'}, shape {shape})"
        channel = len(shape) == 3 and shape[-1] == 1
        if self.takes == "waveform":  # Keras's MelSpectrogram: [mels, frames]; its STFTSpectrogram: [frames, bins(, 1)]
            return ("mels_frames", False, None) if self.keras_frames is None else ("frames_mels", channel, None)
        dims = shape[:2] if channel else shape
        if len(dims) != 2:
            raise ModelError(f"{where} is not a mel spectrogram [n_mels, frames(, 1)] or [frames, n_mels(, 1)]")
        size = "n_mels" if self.cepstrum is None else "n_mfcc"
        has_mels = tuple(d == self.bands for d in dims)
        if layout == "auto":
            if has_mels == (True, True):
                raise ParameterError(f"{where}: both axes have {size}={self.bands} sizes; pass {_PASS_LAYOUT}")
            if dims[0] is None and dims[1] is None:
                raise ParameterError(f"{where}: both axes take any size, so which one holds the {size}={self.bands} "
                                     f"bands cannot be told; pass {_PASS_LAYOUT}")
            if has_mels == (False, False):
                flags = f"--{size.replace('_', '-')}, --input-layer" + (", --layout" if None in dims else "")
                raise ModelError(f"{where} has no axis of {size}={self.bands} bands: is it a mel spectrogram "
                                 f"of these settings ({size}=, input_layer=" + (", layout=" if None in dims else "")
                                 + f"; on the command line {flags})?")
            layout = "mels_frames" if has_mels[0] else "frames_mels"
        mel_axis = 0 if layout == "mels_frames" else 1
        if dims[mel_axis] not in (None, self.bands):
            raise ModelError(f"{where} has {dims[mel_axis]} bands on its mel axis for layout={layout!r} (--layout "
                             f"{layout}), not {size}={self.bands}")
        return layout, channel, dims[1 - mel_axis]

    def mel_input(self, waveform: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(complex STFT [batch, freq, frames], mel power [batch, n_mels, frames])`` of ``[batch, samples]``
        (a ``keras.layers.STFTSpectrogram`` model's: its own frames and scale, and the magnitude)."""
        if self.keras_frames is None:
            stft_matrix = spectral.stft(waveform, n_fft=self.n_fft, hop_length=self.hop_length)
        else:
            stft_matrix = self.keras_frames.stft(waveform)
            if self.takes == "waveform":
                return stft_matrix, tf.abs(stft_matrix)
        magnitude = tf.abs(stft_matrix)
        scaled = magnitude if self.power == 1.0 else tf.pow(magnitude, self.power)
        mel = tf.einsum("mf,...ft->...mt", tf.constant(self.filterbank), scaled)
        return stft_matrix, mel

    def _model_input(self, waveform: tf.Tensor, mel: tf.Tensor, compressed: tf.Tensor) -> tf.Tensor:
        """What the model takes (see the class docstring) for ``waveform``, its ``mel`` power and that compressed."""
        if self.takes == "waveform":
            return waveform
        x = mel if self.takes == "mel power" else compressed
        if self.cepstrum is not None:  # librosa.feature.mfcc: the DCT over the bands
            x = tf.einsum("cm,...mt->...ct", tf.constant(self.cepstrum), x)
        if self.layout == "frames_mels":
            x = tf.linalg.matrix_transpose(x)
        return x[..., tf.newaxis] if self._channel_axis else x

    def _mels_frames(self, deconvolved: tf.Tensor) -> tf.Tensor:
        """The deconvolution's maps (layout of :class:`~tfaural.deconv.DeconvNet`) as ``[batch, k, n_mels, frames]``:
        a domain with a channel axis comes back in its own order, one without it transposed; MFCC maps are taken
        back to the bands by the transposed DCT."""
        if (self.layout == "frames_mels") == self._channel_axis:
            deconvolved = tf.linalg.matrix_transpose(deconvolved)
        if self.cepstrum is not None:
            deconvolved = tf.einsum("cm,...ct->...mt", tf.constant(self.cepstrum), deconvolved)
        return deconvolved

    def mel_power(self, deconvolved: tf.Tensor, mel: tf.Tensor) -> tf.Tensor:
        """Deconvolved maps → mel power by the level rule of the class docstring.

        Args:
            deconvolved: float32 ``[batch, k, n_mels, frames]`` in the model's compressed domain.
            mel: float32 ``[batch, n_mels, frames]``: the input's mel power (:meth:`mel_input`).

        Returns:
            float32 ``[batch, k, n_mels, frames]`` >= 0 (zeros where a map has no positive value).
        """
        mel = tf.convert_to_tensor(mel, tf.float32)
        return self._power(deconvolved, mel, self._input_rise(mel, self.compression(mel)))

    def _input_rise(self, mel: tf.Tensor, compressed: tf.Tensor) -> tf.Tensor:
        """``[batch, 1, 1, 1]``: each input's greatest rise above the compression's silence."""
        top = tf.reduce_max(compressed - self.compression.silence(mel), axis=[-2, -1], keepdims=True)
        return top[:, tf.newaxis]

    def _power(self, deconvolved: tf.Tensor, mel: tf.Tensor, input_rise: tf.Tensor) -> tf.Tensor:
        """:meth:`mel_power` with the input's greatest rise (:meth:`_input_rise`) computed once per call."""
        rise = tf.nn.relu(tf.convert_to_tensor(deconvolved, tf.float32))
        if self.match_input_level:
            top = tf.reduce_max(rise, axis=[-2, -1], keepdims=True)
            rise = rise * tf.math.divide_no_nan(input_rise, top)
        if math.isfinite(self.compression.units):
            rise = _below_overflow(rise, MAX_LOG10 * self.compression.units)
        return self.compression.expand(rise, mel[:, tf.newaxis])

    def describe(self) -> dict[str, Any]:
        """What the model sees, resolved (``metadata.json``'s ``mel`` of an imported model): ``n_fft``,
        ``hop_length``, ``n_mels`` (the STFT's own bins where there are no mel bands), ``power``, ``layout``,
        ``frames`` (the count the model is built for; ``None``: any) and the compression
        (:func:`tfaural.spectral.compression_spec`: ``compression``, and ``top_db``, ``amin`` of a dB one)."""
        mfcc = {} if self.cepstrum is None else {"n_mfcc": self.bands}
        return {"n_fft": self.n_fft, "hop_length": self.hop_length, "n_mels": self.n_mels, **mfcc, "power": self.power,
                "layout": self.layout, "frames": self.frames, **spectral.compression_spec(self.compression)}

    def _failure_hint(self, x: tf.Tensor) -> str | None:
        frames = x.shape[-2 if self._channel_axis else -1] if self.layout == "mels_frames" else \
            x.shape[-3 if self._channel_axis else -2]
        if self.takes == "waveform" or self.frames is None or frames is None or frames == self.frames:
            return None
        shortest, longest = self.clip_samples(self.frames)
        kind = "centred frames" if self.keras_frames is None else f"{self.keras_frames.layer}'s frames"
        return (f"the model is built for {self.frames} frames and this clip gives {frames} (hop {self.hop_length}, "
                f"{kind}): clips of {shortest} to {longest} samples ({shortest / self.sample_rate:g} s) give "
                f"{self.frames}")

    def clip_samples(self, frames: int) -> tuple[int, int]:
        """``(shortest, longest)`` clip, in samples, whose spectrogram has ``frames`` frames: ``(frames - 1) ×
        hop`` to ``frames × hop − 1`` of centred frames, ``(frames - 1) × hop + frame_length`` and ``hop − 1``
        more of ``tf.signal.stft``'s (a model on the waveform: its layer's own, not counted here)."""
        if self.keras_frames is not None and self.takes != "waveform":
            return self.keras_frames.frame_samples(frames)
        return (frames - 1) * self.hop_length, frames * self.hop_length - 1

    def _prepare(
        self, waveform: tf.Tensor | np.ndarray, mode: str | tf.Tensor, keep_deconvolved: bool
    ) -> tuple[tf.Tensor, tf.Tensor | None, Any, tuple[tf.DType, ...]]:
        waveform, level, dtypes = _batch_level_dtypes(waveform, mode, keep_deconvolved)
        stft_matrix, mel = self.mel_input(waveform)
        compressed = self.compression(mel)  # once per call: the model's input (if it takes it) and the level rule
        input_rise = self._input_rise(mel, compressed)

        def finish(deconvolved: tf.Tensor) -> tuple[tf.Tensor, ...]:
            maps = self._mels_frames(deconvolved)
            power = self._power(maps, mel, input_rise)
            linear = _undo_power(mel_to_linear_power(power, self.filterbank, inversion=self.inversion), self.power)
            audio = reconstruct(linear, stft_matrix, mode=mode, n_fft=self.n_fft, hop_length=self.hop_length,
                                length=tf.shape(waveform)[-1],
                                inverse=None if self.keras_frames is None else self.keras_frames.istft)
            result = normalise_peak(audio, input_peak=level)
            return (maps, *result) if keep_deconvolved else result

        return self._model_input(waveform, mel, compressed), mel, finish, dtypes


#: How to name the layout of a spectrogram model whose input does not say it: the argument and the flag.
_PASS_LAYOUT = ("layout='mels_frames' ([n_mels, frames]) or layout='frames_mels' ([frames, n_mels]); on the command "
                "line --layout mels_frames or --layout frames_mels")


def _same(value: Any, expected: Any) -> bool:
    if isinstance(value, np.ndarray) or isinstance(expected, np.ndarray):
        return bool(np.shape(value) == np.shape(expected) and np.allclose(value, expected, rtol=1e-5, atol=1e-7))
    return bool(value == expected)


def _front_compression(model: keras.Model, front: keras.layers.Layer | None) -> spectral.Compression:
    """The compression of a front end that says what it is (:class:`~tfaural.models.layers.InputScaling`)."""
    if isinstance(front, InputScaling):
        if front.mode == "linear":
            return spectral.Linear()
        return spectral.Log1p(front.c, base=10.0 if front.mode == "log10" else math.e)
    if front is None:
        raise ModelError(
            f"model {model.name!r} takes its input as it is: if that is a compressed mel spectrogram, say how it was "
            "compressed with compression= (e.g. tfaural.spectral.Decibels() for librosa.power_to_db); if the model "
            "compresses mel power itself, name its compression layer with input_layer= and pass compression="
        )
    raise ModelError(
        f"model {model.name!r}: its deconvolution ends at layer {front.name!r} ({type(front).__name__}), which does "
        "not say what compression of mel power it is: pass compression= (e.g. log_c= for log10(1 + C m))"
    )


#: The modes of ``keras.layers.STFTSpectrogram`` whose output is a magnitude (so a map can be heard).
KERAS_STFT_MODES = ("magnitude", "log")


@dataclasses.dataclass(frozen=True, eq=False)
class KerasFrames:
    """Frames that are not tfaural's centred ones: a ``keras.layers.STFTSpectrogram`` front end's, or
    ``tf.signal.stft``'s for a spectrogram made outside the model (:meth:`tf_signal`); and their inverse.

    That layer is a strided convolution of the waveform with the real and imaginary parts of
    DFT kernels times its window (divided by ``sqrt(sum w^2)`` for ``scaling="density"``, by
    ``sum |w|`` for ``"spectrum"``), with ``valid`` padding or TensorFlow's zero ``same``
    padding (``floor(total / 2)`` samples before): not tfaural's centred STFT. Its complex
    STFT is :func:`tf.signal.stft` with the window read from the layer's own kernels (the real
    kernel's first bin is the scaled window), after the layer's padding; its inverse is the
    least-squares overlap-add (:meth:`istft`), cropped back.

    Attributes:
        window: float32 ``[frame_length]``: the layer's window, scaled as its kernels are.
        frame_step: Hop in samples.
        fft_length: FFT size (= ``frame_length``).
        padding: ``"valid"`` or ``"same"``.
        mode: ``"magnitude"`` or ``"log"`` (``ln(max(|X|, eps))``).
        window_name: The layer's window (``"hann"``, ``"hamming"``, ...; ``"custom"`` for an array).
        layer: What makes them: ``"keras.layers.STFTSpectrogram"``, or ``"tf.signal.stft"`` (outside the
            model: frames of ``len(window)`` samples, zero-padded at the end to ``fft_length``).
    """

    window: np.ndarray
    frame_step: int
    fft_length: int
    padding: str
    mode: str
    window_name: str = "custom"
    layer: str = "keras.layers.STFTSpectrogram"

    @classmethod
    def tf_signal(cls, *, n_fft: int, hop_length: int, frame_length: int | None = None) -> KerasFrames:
        """The frames of ``tf.signal.stft(y, frame_length, frame_step=hop_length, fft_length=n_fft)`` (its
        default periodic Hann window, no padding: ``librosa.stft(center=False)`` when ``frame_length`` is
        ``n_fft``): the spectrogram of a model such as TensorFlow's "simple audio recognition" tutorial's.

        Raises:
            ParameterError: If ``frame_length`` is not in ``[2, n_fft]``.
        """
        length = n_fft if frame_length is None else int(frame_length)
        if not 2 <= length <= n_fft:
            raise ParameterError(f"frame_length={frame_length!r} is invalid: expected 2 to n_fft={n_fft} samples")
        # tf.signal.stft's own default window (periodic only for an even length: the tutorial's 255 gets the
        # symmetric one)
        window = tf.signal.hann_window(length, periodic=True).numpy()
        return cls(window.astype(np.float32), int(hop_length), int(n_fft), "valid", "magnitude", "hann",
                   "tf.signal.stft")

    @property
    def frame_length(self) -> int:
        """Samples per frame (the window's length; at most ``fft_length``)."""
        return int(len(self.window))

    def frame_samples(self, frames: int) -> tuple[int, int]:
        """``(shortest, longest)`` clip, in samples, that gives ``frames`` frames (``valid`` padding only)."""
        shortest = (frames - 1) * self.frame_step + self.frame_length
        return shortest, shortest + self.frame_step - 1

    @classmethod
    def of(cls, layer: Any, model: keras.Model) -> KerasFrames:
        """The frames of ``layer``, checked: a magnitude mode, one channel, channels last, a frame as long as the
        FFT, and kernels that are still its window's DFT (not trained away from it).

        Raises:
            ModelError: Naming the layer and what tfaural cannot hear of it.
        """
        where = f"model {model.name!r}: its STFTSpectrogram layer {layer.name!r}"
        if layer.mode not in KERAS_STFT_MODES:
            raise ModelError(f"{where} has mode={layer.mode!r}; tfaural hears the magnitude modes "
                             f"{KERAS_STFT_MODES} (the deconvolution of a phase or of real and imaginary parts is "
                             "no magnitude to put the excerpt's phase on): tfaural.deconv.DeconvNet deconvolves it")
        channels = model.inputs[0].shape[-1] if layer.data_format == "channels_last" else None
        if layer.data_format != "channels_last" or channels != 1:
            raise ModelError(f"{where} takes {model.inputs[0].shape} ({layer.data_format}); tfaural hears a model "
                             "of mono waveforms [batch, samples, 1] (channels last)")
        length, fft = int(layer.frame_length), int(layer._fft_length)  # fft_length resolved (it may be None)
        if length != fft:
            raise ModelError(f"{where} has frames of {length} samples and an FFT of {fft}; tfaural hears frames as "
                             "long as the FFT")
        real = np.asarray(keras.ops.convert_to_numpy(layer.real_kernel), np.float64)[:, 0, :]
        imag = np.asarray(keras.ops.convert_to_numpy(layer.imag_kernel), np.float64)[:, 0, :]
        window = real[:, 0]  # cos(0) = 1: the scaled window
        angle = 2 * np.pi * np.outer(np.arange(length), np.arange(fft // 2 + 1)) / fft
        error = max(np.abs(real - window[:, None] * np.cos(angle)).max(),
                    np.abs(imag + window[:, None] * np.sin(angle)).max())
        # float32 kernels of angles up to pi * frame_length are off by ~1e-4 of the window: trained ones by more
        if not error <= 1e-3 * np.abs(window).max():
            raise ModelError(f"{where} has kernels that are not its window's DFT (trained with the model: off by "
                             f"{error:.3g}); its spectrogram has no inverse STFT to hear it by: tfaural.deconv."
                             "DeconvNet deconvolves it")
        name = layer.window if isinstance(layer.window, str) else "custom"
        return cls(window.astype(np.float32), int(layer.frame_step), fft, str(layer.padding), str(layer.mode), name)

    def describe(self) -> dict[str, Any]:
        """The STFT as an export's ``metadata.json`` states it (``center: false``: the layer's own padding, or
        none for ``tf.signal.stft``'s frames)."""
        win_length = None if self.frame_length == self.fft_length else self.frame_length
        return {"n_fft": self.fft_length, "hop_length": self.frame_step, "win_length": win_length,
                "window": self.window_name, "center": False, "padding": self.padding, "layer": self.layer,
                "mode": self.mode}

    def settings(self, sample_rate: int) -> dict[str, Any]:
        """:class:`MelAuraliser`'s settings: the STFT's own bins (no mel bands), magnitude, the layer's log."""
        # log mode is ln(max(sqrt(max(power, eps)), eps)): silence at ln(sqrt(eps)), read as ln(|X| + sqrt(eps))
        floor = math.sqrt(float(keras.config.epsilon()))
        compression = spectral.LogOffset(floor) if self.mode == "log" else spectral.Linear()
        n_freq = self.fft_length // 2 + 1
        return {"sample_rate": sample_rate, "n_fft": self.fft_length, "hop_length": self.frame_step,
                "n_mels": n_freq, "power": 1.0, "compression": compression, "filterbank": "linear"}

    def _padding(self, samples: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(before, after)`` samples of the layer's padding of a clip of ``samples``."""
        if self.padding == "valid":
            zero = tf.zeros([], tf.int32)
            return zero, zero
        frames = (samples + self.frame_step - 1) // self.frame_step  # TensorFlow's "same": ceil(n / step)
        total = tf.maximum((frames - 1) * self.frame_step + self.fft_length - samples, 0)
        return total // 2, total - total // 2

    def _window(self, frame_length: int, dtype: tf.DType = tf.float32) -> tf.Tensor:
        del frame_length
        return tf.constant(self.window, dtype)

    def stft(self, waveform: tf.Tensor) -> tf.Tensor:
        """complex64 ``[batch, freq, frames]``: the layer's STFT of ``[batch, samples]`` (its frames and scale)."""
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        before, after = self._padding(tf.shape(waveform)[-1])
        padded = tf.pad(waveform, [[0, 0], [before, after]])
        matrix = tf.signal.stft(padded, frame_length=self.frame_length, frame_step=self.frame_step,
                                fft_length=self.fft_length, window_fn=self._window, pad_end=False)
        return tf.linalg.matrix_transpose(matrix)

    def istft(self, stft_matrix: tf.Tensor, length: int | tf.Tensor) -> tf.Tensor:
        """float32 ``[..., length]``: the least-squares inverse of :meth:`stft` (``[..., freq, frames]``): the
        overlap-add of each frame times the window over the overlap-add of the squared window (Griffin and Lim),
        exact where the frames' windows sum to at least 1e-3 of their most (so at the edges of ``valid`` frames,
        where the window is near zero, a few samples are zero rather than amplified)."""
        frames = tf.signal.irfft(tf.linalg.matrix_transpose(stft_matrix), fft_length=[self.fft_length])
        frames = frames[..., : self.frame_length]  # a frame shorter than the FFT was zero-padded at its end
        window = tf.constant(self.window, tf.float32)
        y = tf.signal.overlap_and_add(frames * window, self.frame_step)
        squares = tf.signal.overlap_and_add(tf.tile(tf.square(window)[tf.newaxis], [tf.shape(frames)[-2], 1]),
                                            self.frame_step)
        covered = squares > 1e-3 * tf.reduce_max(squares)
        y = tf.where(covered, y / tf.where(covered, squares, tf.ones_like(squares)), tf.zeros_like(y))
        length = tf.convert_to_tensor(length, tf.int32)
        before, _ = self._padding(length)
        y = y[..., before:]
        y = tf.pad(y, [[0, 0]] * (y.shape.rank - 1) + [[0, tf.maximum(length - tf.shape(y)[-1], 0)]])
        return y[..., :length]


def _keras_mel_settings(layer: keras.layers.MelSpectrogram, model: keras.Model) -> dict[str, Any]:
    """The auraliser's settings read from a ``keras.layers.MelSpectrogram`` front end."""
    window = layer.window if isinstance(layer.window, str) or layer.window is None else "a tensor"
    if window != "hann" or layer.sequence_length != layer.fft_length:
        raise ModelError(
            f"model {model.name!r}: its MelSpectrogram layer {layer.name!r} has window={window!r} of "
            f"{layer.sequence_length} samples and fft_length={layer.fft_length}; tfaural's STFT (whose phase the "
            "auralisation reuses) has a periodic Hann window as long as the FFT"
        )
    n_freq = layer.fft_length // 2 + 1
    weights = layer.linear_to_mel_weight_matrix(
        num_mel_bins=layer.num_mel_bins, num_spectrogram_bins=n_freq, sampling_rate=layer.sampling_rate,
        lower_edge_hertz=layer.min_freq, upper_edge_hertz=layer.max_freq,
    )
    if layer.power_to_db:
        reference = max(abs(float(layer.ref_power)), float(layer.min_power))
        compression: spectral.Compression = spectral.Decibels(
            amin=float(layer.min_power), ref=reference, top_db=float(layer.top_db), multiplier=10.0)
    else:
        compression = spectral.Linear()
    return {
        "sample_rate": int(layer.sampling_rate), "n_fft": int(layer.fft_length),
        "hop_length": int(layer.sequence_stride), "n_mels": int(layer.num_mel_bins), "power": float(layer.mag_exp),
        "compression": compression, "filterbank": np.asarray(keras.ops.convert_to_numpy(weights), np.float32).T,
    }


def auraliser_for(model: keras.Model, *, chunk_elements: int | None = None,
                  net: DeconvNet | None = None) -> Auraliser:
    """The auraliser of a tfaural run's model: :class:`MelAuraliser` for the imported log-mel taggers
    (:class:`~tfaural.config.MusicnnConfig`), the one its front end calls for (:func:`auraliser_for_front_end`)
    for an imported Keras model (:class:`~tfaural.config.KerasConfig`), :class:`Auraliser` otherwise
    (``net``: a deconvolution network of ``model`` to share, see :class:`Auraliser`)."""
    config = config_from_model(model)
    if isinstance(config, KerasConfig):
        return _heard_through(model, config.front_end, chunk_elements=chunk_elements,
                              net=net if net is not None else deconv_net_for(model))
    if isinstance(config, MusicnnConfig):
        return MelAuraliser(model, chunk_elements=chunk_elements, net=net)
    return Auraliser(model, chunk_elements=chunk_elements, net=net)


def deconv_net_for(model: keras.Model, *, method: str = "deconvnet") -> DeconvNet:
    """The deconvolution network of a run's model: an imported Keras model's ends where its front end says
    (``input_layer``: the model's own compression layer), every other at the model's input or front end."""
    config = getattr(model, "tfaural_config", None)
    if isinstance(config, KerasConfig):
        return DeconvNet(model, method=method, input_layer=config.front_end.input_layer,
                         extra_levels=config.extra_levels)
    return DeconvNet(model, method=method)


def front_end_filterbank(front: FrontEndConfig) -> np.ndarray | str | None:
    """The mel filterbank a front end describes: ``None`` for the library's default (Slaney, 0 Hz to Nyquist,
    area-normalised), ``"linear"`` for the STFT's own bins, else ``[n_mels, n_fft // 2 + 1]`` weights.

    Raises:
        ParameterError: If non-default bands lack ``sample_rate``, ``n_fft`` or ``n_mels``.
    """
    if front.linear_frequency:
        return "linear"
    if front.default_bands:
        return None
    if front.sample_rate is None or front.n_fft is None or front.n_mels is None:
        raise ParameterError("mel bands need --sample-rate, --n-fft and --n-mels")
    return spectral.mel_filterbank(sample_rate=front.sample_rate, n_fft=front.n_fft, n_mels=front.n_mels,
                                   fmin=front.fmin, fmax=front.fmax, htk=front.htk,
                                   norm=None if front.mel_norm == "none" else front.mel_norm)


def auraliser_for_front_end(model: keras.Model, front: FrontEndConfig, *, method: str = "deconvnet",
                            chunk_elements: int | None = None, net: DeconvNet | None = None,
                            extra_levels: Sequence[str] = ()) -> Auraliser:
    """The auraliser of any Keras audio CNN, told by ``front`` what its file does not say.

    * a run's model (tfaural's own, an imported musicnn tagger or an imported Keras model): its config
      says everything, and ``front`` must be empty (:func:`auraliser_for`);
    * a model with its own ``keras.layers.MelSpectrogram``: everything is read from that layer
      (:class:`MelAuraliser`);
    * a model on the mono waveform ``[samples(, 1)]``: ``front.sample_rate`` only; its deconvolution is the
      sound (:class:`Auraliser`); a stereo ``[samples, 2]`` is refused (unless ``front`` says 2 bands);
    * a model on a mel (or STFT) spectrogram made outside it: ``front``'s STFT (centred frames, or
      ``tf.signal.stft``'s with ``center=False``), bands, power and compression (or ``input_layer``: the
      model's own compression layer), :class:`MelAuraliser`.

    Its sample rate is the auraliser's ``sample_rate`` (waveform models: ``front.sample_rate``).

    Args:
        model: The Keras model.
        front: What it takes, where its file does not say it (flags named as ``python -m tfaural.listen``'s).
        method: ``deconvnet``, ``guided`` or ``gradient``.
        chunk_elements: See :class:`Auraliser`.
        net: A deconvolution network of ``model`` to share (``None``: one of its own, with ``method``,
            the input layer its config or ``front`` names and ``extra_levels``).
        extra_levels: Layers heard as levels after the conv blocks (:class:`~tfaural.deconv.DeconvNet`).

    Raises:
        ModelError: If the model is none of the kinds above, or cannot be deconvolved (a ``channels_first``
            layer is named).
        ParameterError: For missing, conflicting or invalid front-end settings (named as flags).
    """
    config = getattr(model, "tfaural_config", None)
    if config is not None:
        if extra_levels:
            raise ParameterError(f"--extra-levels: model {model.name!r} is a run's model, whose levels its config "
                                 "says (import the model file with --extra-levels instead)")
        if front.given():
            said = ("was imported as a run, whose run.json" if isinstance(config, KerasConfig)
                    else "was built by tfaural, whose config")
            raise ParameterError(f"{', '.join(front.given())}: model {model.name!r} {said} says what it takes; "
                                 "leave the front-end options out")
        return auraliser_for(model, chunk_elements=chunk_elements,
                             net=net if net is not None else deconv_net_for(model, method=method))
    return _heard_through(model, front, method=method, chunk_elements=chunk_elements, net=net,
                          extra_levels=extra_levels)


def _sample_rate_only(front: FrontEndConfig, what: str, *, missing: str) -> int:
    """``front``'s sample rate, for a model that makes its own input from the waveform (``what`` it does): every
    other front-end flag is refused, and a missing rate too (``missing``: what the model is, for that message)."""
    extra = [flag for flag in front.given() if flag != "--sample-rate"]
    if extra:
        raise ParameterError(f"{', '.join(extra)}: {what}; only --sample-rate applies")
    if front.sample_rate is None:
        raise ParameterError(f"{missing}: pass its --sample-rate")
    return int(front.sample_rate)


def _refuse_channels_first(model: keras.Model, net: DeconvNet) -> None:
    """Raises a ModelError naming the ``channels_first`` layers a level's walk would go through.

    Said before anything else: such a model's input is not read as channels-last (a ``[1, n_mels, frames]``
    input would be taken for a spectrogram of another layout), and no walk goes through them.
    """
    layers = net.channels_first_layers()
    if layers:
        named = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in layers)
        raise ModelError(f"model {model.name!r}: layer(s) {named} take data_format='channels_first'; tfaural "
                         "deconvolves and hears channels_last models only (Keras's default, channels on the last "
                         "axis): rebuild the model with data_format='channels_last' and copy its weights into it")


def _spectrogram_bands(front: FrontEndConfig) -> int | None:
    """The band count ``front`` says a spectrogram model's input has (``None``: it says none)."""
    if front.n_mfcc is not None:
        return front.n_mfcc
    if front.linear_frequency:
        return None if front.n_fft is None else front.n_fft // 2 + 1
    return front.n_mels


def _refuse_stereo_waveform(model: keras.Model, net: DeconvNet, front: FrontEndConfig) -> None:
    """Raises a ModelError for a model that takes a stereo waveform ``[samples, 2]``.

    Its input, ``[steps, 2]`` with no front end of its own, could also be a spectrogram of 2 bands: it is read as
    stereo unless ``front`` says 2 bands, and, where its time axis is fixed, unless ``front`` says how a
    spectrogram is made at all (a model of any length on 2 bands is no spectrogram model anyone trains).
    """
    shape = net.domain_shape
    if net.front_end is not None or len(shape) != 3 or shape[-1] != 2 or _spectrogram_bands(front) == 2:
        return
    if shape[1] is not None and [flag for flag in front.given() if flag != "--sample-rate"]:
        return
    raise ModelError(
        f"model {model.name!r} takes an input of shape {shape[1:]} ({net.input_layer or 'its input'}): a stereo "
        "waveform [samples, 2]. A waveform model must take mono audio ([samples, 1] or [samples]; tfaural mixes "
        "every file down to mono): a 2-channel input is not supported. Make a model of it that takes mono, a new "
        f"input fed to both channels: mono = keras.Input(({shape[1]}, 1)); keras.Model(mono, model(keras.layers."
        "Concatenate()([mono, mono]))). (A spectrogram model of 2 bands [frames, 2] takes n_mels=2, --n-mels 2, "
        "and its other spectrogram options.)"
    )


def _heard_through(model: keras.Model, front: FrontEndConfig, *, method: str = "deconvnet",
                   chunk_elements: int | None = None, net: DeconvNet | None = None,
                   extra_levels: Sequence[str] = ()) -> Auraliser:
    """:func:`auraliser_for_front_end` of a model whose front end ``front`` describes (its config does not)."""
    if net is None:
        net = DeconvNet(model, method=method, input_layer=front.input_layer, extra_levels=extra_levels)
    _refuse_channels_first(model, net)
    _refuse_stereo_waveform(model, net, front)
    if ends_at_a_waveform(net):
        rate = _sample_rate_only(front, f"model {model.name!r} takes the waveform, whose deconvolution is the sound",
                                 missing=f"model {model.name!r} takes the waveform")
        auraliser = Auraliser(model, chunk_elements=chunk_elements, net=net)
        auraliser.sample_rate = rate
        return auraliser
    if isinstance(net.front_end, keras.layers.STFTSpectrogram):
        where = (f"model {model.name!r} makes its spectrogram with its keras.layers.STFTSpectrogram "
                 f"{net.front_end.name!r}")
        rate = _sample_rate_only(front, where, missing=f"{where}, which does not know its rate")
        return MelAuraliser(model, net=net, sample_rate=rate, chunk_elements=chunk_elements)
    power = front.power if front.power is not None else 2.0
    compression = None
    if front.compression is not None:
        compression = spectral.compression_from_spec(front.compression, power=power, top_db=front.top_db,
                                                     amin=front.amin)
    elif front.amin is not None or front.top_db != FrontEndConfig.top_db:
        raise ParameterError("--top-db and --amin shape a dB --compression: pass --compression db or db-max")
    bank_flags = [flag for flag in front.given() if flag in ("--fmin", "--fmax", "--htk", "--mel-norm")]
    if isinstance(net.front_end, keras.layers.MelSpectrogram):
        if front.linear_frequency or bank_flags:
            raise ParameterError(f"{', '.join(bank_flags or ['--linear-frequency'])}: the model's MelSpectrogram layer "
                                 "makes its own mel bands")
    else:
        if front.linear_frequency and bank_flags:
            raise ParameterError(f"{', '.join(bank_flags)}: --linear-frequency has no mel bands")
        needed = {"--sample-rate": front.sample_rate, "--n-fft": front.n_fft, "--hop-length": front.hop_length,
                  "--n-mels": front.n_mels if not front.linear_frequency else 1}
        missing = [flag for flag, value in needed.items() if value is None]
        if missing:
            raise ParameterError(
                f"model {model.name!r} takes a spectrogram (shape {net.domain_shape[1:]} at "
                f"{net.input_layer or 'its input'}) and its file does not say how it is made: pass {', '.join(missing)}"
                + ("" if front.compression or front.input_layer else
                   ", and --compression as your preprocessing made it (or --input-layer: the model's own)")
            )
    if isinstance(net.front_end, keras.layers.MelSpectrogram) and not front.center:
        raise ParameterError("--no-center: the model's MelSpectrogram layer makes its own (centred) frames")
    if front.n_mfcc is not None:
        if net.front_end is not None or front.compression is None:
            raise ParameterError("--n-mfcc: MFCCs are taken of a compressed spectrogram made outside the model: pass "
                                 "--compression (db for librosa.feature.mfcc), not a front end of the model's own")
        bands = front.n_mels if not front.linear_frequency else (front.n_fft or 0) // 2 + 1
        if bands and front.n_mfcc > bands:
            raise ParameterError(f"--n-mfcc {front.n_mfcc} is invalid: expected at most the {bands} bands it is "
                                 "taken over (--n-mels)")
    frames = None
    if not front.center and front.n_fft is not None and front.hop_length is not None:
        frames = KerasFrames.tf_signal(n_fft=front.n_fft, hop_length=front.hop_length, frame_length=front.frame_length)
    return MelAuraliser(
        model, net=net, sample_rate=front.sample_rate, n_fft=front.n_fft, hop_length=front.hop_length,
        n_mels=front.n_mels, power=front.power, compression=compression, layout=front.layout,
        filterbank=front_end_filterbank(front), chunk_elements=chunk_elements, frames=frames, n_mfcc=front.n_mfcc,
    )


def fixed_input_samples(auraliser: Auraliser) -> int | None:
    """Samples of the one input length the auraliser's model is built for (``None``: any length)."""
    if isinstance(auraliser, MelAuraliser) and auraliser.frames is not None:
        # a spectrogram model of fixed-size patches: the clips that give that many frames
        return int(auraliser.clip_samples(auraliser.frames)[0])
    config = auraliser.config
    if config is not None and hasattr(config, "input_length"):  # the SampleCNN family
        return int(config.input_length)
    if auraliser.is_spectral and getattr(auraliser, "takes", None) != "waveform":
        return None
    shape = tuple(auraliser.net.model.inputs[0].shape)  # a model on the waveform
    return int(shape[1]) if len(shape) >= 2 and shape[1] is not None else None


#: Longest clip :func:`shortest_clip_samples` tries (2**24 samples: 6 minutes at 44.1 kHz).
SHORTEST_CLIP_LIMIT = 2**24


def shortest_clip_samples(auraliser: Auraliser, levels: Sequence[int], *, guess: int) -> int:
    """The fewest samples of a clip whose maps at each of ``levels`` are not empty: what the deconvolution and
    auralisation of those levels need, often far less than a tagging segment.

    A model built for one input length (:func:`fixed_input_samples`) needs that length. For any other, a binary
    search over the front end on short clips of noise and the model's shape inference up to the levels finds
    the least length (a map's length only grows with the clip's, and a clip too short for a ``valid``
    convolution or pooling is refused by the layer's shape inference), without running a kernel that fails.
    Shape inference is not always exact (``keras.layers.MelSpectrogram`` reports frames that its reflection
    padding cannot make), so the answer is then confirmed by a forward pass, and searched again by forward
    passes above it if that pass fails or gives an empty map.

    Args:
        auraliser: The auraliser of the model (its front end makes the model's input).
        levels: Deconvolvable levels of ``auraliser.net``.
        guess: A length likely long enough (e.g. a tagging segment), in samples: the search starts there (and
            doubles it while it is too short).

    Returns:
        Samples.

    Raises:
        ModelError: If no clip of up to :data:`SHORTEST_CLIP_LIMIT` samples gives maps at every level.
    """
    fixed = fixed_input_samples(auraliser)
    if fixed is not None:
        return fixed
    net = auraliser.net

    def fits(samples: int, *, run: bool) -> bool:
        return _levels_fit(auraliser, levels, samples, run=run)

    def least(low: int, high: int, *, run: bool) -> int:
        """The least length that fits in ``(low, high]``, given ``fits(high)`` and not ``fits(low)``."""
        while high - low > 1:
            middle = (low + high) // 2
            if fits(middle, run=run):
                high = middle
            else:
                low = middle
        return high

    low, high = 0, max(1, int(guess))
    while not (fits(high, run=False) and fits(high, run=True)):
        if high >= SHORTEST_CLIP_LIMIT:
            raise ModelError(f"layers {list(levels)} of model {net.model.name!r} give empty maps on every clip of "
                             f"up to {SHORTEST_CLIP_LIMIT} samples")
        low, high = high, min(2 * high, SHORTEST_CLIP_LIMIT)
    inferred = least(low, high, run=False)
    return inferred if fits(inferred, run=True) else least(inferred, high, run=True)


def _levels_fit(auraliser: Auraliser, levels: Sequence[int], samples: int, *, run: bool) -> bool:
    """Whether a clip of ``samples`` gives maps at every one of ``levels`` that are not empty: by the model's
    shape inference (``run=False``: no kernel runs, so nothing fails in the runtime's log) or a forward pass."""
    net = auraliser.net
    names = [net.layer_name(level) for level in levels]
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, size=(1, samples)).astype(np.float32)
    try:
        x = auraliser.model_input(noise)
        if run:
            shapes = [tuple(m.shape) for m in net.layer_outputs(x, names)]
        else:
            shapes = net.output_shapes(x.shape, names)
    except (ValueError, tf.errors.OpError, TfauralError):  # oneDNN's pooling refuses with AbortedError
        return False
    return all(size is not None and size > 0 for shape in shapes for size in shape)


def longest_clip_samples(auraliser: Auraliser, levels: Sequence[int]) -> int | None:
    """The most samples of a clip whose maps at ``levels`` the model can compute (``None``: no limit of its own).

    A model that takes any length has none. Nor, usually, has a model built for one input length: its fixed length
    is often needed only by its head (a flattening dense layer), and its layers up to the levels take longer
    clips, as a forward pass on twice its length shows. Where that pass fails (a layer with weights per frame,
    such as a ``BatchNormalization`` over the time axis in the CRNN of Choi et al. 2017), the longest clip is the
    longest that still gives the model's input length: :meth:`MelAuraliser.clip_samples` of a spectrogram model
    (``frames * hop_length - 1`` of centred frames), the input length of a waveform model.

    Args:
        auraliser: The auraliser of the model.
        levels: Deconvolvable levels of ``auraliser.net``.

    Returns:
        Samples, or ``None``.
    """
    fixed = fixed_input_samples(auraliser)
    if fixed is None or not levels:
        return None
    longer = 2 * fixed
    if _levels_fit(auraliser, levels, longer, run=False) and _levels_fit(auraliser, levels, longer, run=True):
        return None
    if isinstance(auraliser, MelAuraliser) and auraliser.frames is not None:
        return int(auraliser.clip_samples(auraliser.frames)[1])
    return fixed


def checked_clip_samples(auraliser: Auraliser, levels: Sequence[int], *, samples: int, sample_rate: int,
                         flag: str = "--clip-seconds") -> int:
    """:func:`shortest_clip_samples` of ``levels``, after checking that a clip of ``samples`` is not shorter.

    Raises:
        ParameterError: Naming ``flag``, the deepest level and the shortest clip, if ``samples`` is shorter.
    """
    shortest = shortest_clip_samples(auraliser, levels, guess=samples)
    if samples < shortest:
        raise ParameterError(
            f"{flag} {samples / sample_rate:g} is too short for layer {max(levels)}: its maps are empty on clips "
            f"shorter than {shortest / sample_rate:.4g} s ({shortest} samples at {sample_rate} Hz)")
    return shortest


#: Float32 tensors of the model's widest activation that one feature's auralisation holds at its peak
#: (what the peak resident memory of a Choi CNN's grew by with the clip's length, rounded up).
WALK_TENSORS = 7


def walk_bytes(auraliser: Auraliser, samples: int) -> int:
    """About what one feature's auralisation of a clip of ``samples`` holds, in bytes: :data:`WALK_TENSORS`
    float32 tensors of the model's widest activation (:func:`tfaural.deconv.walk_expansion` × the size of the
    model's input)."""
    if not auraliser.is_spectral or getattr(auraliser, "takes", None) == "waveform":
        elements = samples  # the model takes the waveform
    else:
        bins = getattr(auraliser, "n_mels", None) or auraliser.config.n_freq
        hop = getattr(auraliser, "hop_length", None) or auraliser.config.hop_length
        elements = bins * (1 + samples // hop)
    return int(WALK_TENSORS * 4 * auraliser.net.expansion * elements)


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
