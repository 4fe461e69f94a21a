"""Auralisation of log-mel models (tfaural.auralise.MelAuraliser) and the mel -> linear inversions."""

from __future__ import annotations

import keras
import librosa
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf
from signal_makers import chirp, clicks, sine

from tfaural import auralise, spectral
from tfaural.errors import ModelError, ParameterError
from tfaural.models import choi_cnn, musicnn_tagger

SR, N_FFT, HOP, N_MELS = 16000, 512, 256, 96


def _power(y: np.ndarray) -> np.ndarray:
    return np.abs(spectral.stft(y, n_fft=N_FFT, hop_length=HOP).numpy()) ** 2


def _signal(rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    y = sine(330, seconds, sample_rate=SR) + chirp(200, 3000, seconds, sample_rate=SR) + clicks(seconds, sample_rate=SR)
    return (0.5 * y + 0.01 * rng.standard_normal(y.size)).astype(np.float32)


def test_the_filterbank_is_librosas_and_pinv_is_the_clipped_pseudo_inverse(rng: np.random.Generator) -> None:
    fb = spectral.mel_filterbank(sample_rate=SR, n_fft=N_FFT, n_mels=N_MELS)
    np.testing.assert_allclose(fb, librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS), rtol=1e-5, atol=1e-8)
    mel = rng.uniform(-0.1, 1.0, (2, 3, N_MELS, 7)).astype(np.float32)  # deconvolved maps may be negative
    ours = auralise.mel_to_linear_power(mel, fb).numpy()
    expected = np.maximum(np.einsum("fm,...mt->...ft", np.linalg.pinv(fb.astype(np.float64)), mel), 0)
    assert ours.shape == (2, 3, N_FFT // 2 + 1, 7) and ours.min() >= 0
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_nnls_reaches_scipys_optimum_and_beats_the_clipped_pseudo_inverse(rng: np.random.Generator) -> None:
    fb = spectral.mel_filterbank(sample_rate=SR, n_fft=N_FFT, n_mels=N_MELS)
    mel = (fb @ _power(_signal(rng)))[:, ::8]  # a few frames of a real mel power spectrogram
    mel = mel / mel.max()
    pinv = auralise.mel_to_linear_power(mel, fb).numpy()
    fista = tf.function(lambda m: auralise.mel_to_linear_power(m, fb, inversion="nnls", iterations=2000))(mel).numpy()
    default = tf.function(lambda m: auralise.mel_to_linear_power(m, fb, inversion="nnls"))(mel).numpy()

    def residual(x: np.ndarray) -> float:
        return float(np.linalg.norm(fb @ x - mel))

    optimum = np.sqrt(sum(scipy.optimize.nnls(fb.astype(np.float64), mel[:, t], maxiter=5000)[1] ** 2
                          for t in range(mel.shape[1])))
    assert fista.min() >= 0 and default.min() >= 0
    assert residual(fista) <= optimum + 1e-3 * np.linalg.norm(mel)
    assert residual(default) < 0.5 * residual(pinv)  # the default iterations already halve the misfit


def test_true_log_mel_comes_back_as_a_magnitude_that_sounds_like_the_input(rng: np.random.Generator) -> None:
    y = _signal(rng)
    fb = spectral.mel_filterbank(sample_rate=SR, n_fft=N_FFT, n_mels=N_MELS)
    stft_matrix = spectral.stft(y[None], n_fft=N_FFT, hop_length=HOP)
    log_mel = spectral.log10_compress(fb @ _power(y))[None, None]
    for inversion in auralise.MEL_INVERSIONS:
        magnitude = auralise.log_mel_to_magnitude(log_mel, fb, inversion=inversion)
        np.testing.assert_allclose(np.einsum("mf,ft->mt", fb, magnitude.numpy()[0, 0] ** 2), fb @ _power(y),
                                   rtol=0, atol=0.02 * (fb @ _power(y)).max())  # its mel power is the input's
        out = auralise.reconstruct(magnitude, stft_matrix, mode="phase", n_fft=N_FFT, hop_length=HOP,
                                   length=y.size).numpy()[0, 0]
        assert np.corrcoef(out, y)[0, 1] > 0.9, inversion


def _small_vgg(rng: np.random.Generator) -> keras.Model:
    model = musicnn_tagger(architecture="vgg", n_outputs=3, n_mels=64, n_frames=96, n_filters=8)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            n = weights[0].shape[0]
            layer.set_weights([rng.uniform(-1.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 2, n)])
    return model


def test_mel_auralisation_is_finite_audible_and_the_right_length(rng: np.random.Generator) -> None:
    model = _small_vgg(rng)
    config = model.tfaural_config
    n = config.segment_length + 100  # any length the convolutions take
    y = np.stack([_signal(rng, n / SR)[:n], sine(880, n / SR, sample_rate=SR)[:n]])
    auraliser = auralise.MelAuraliser(model)
    assert (auraliser.sample_rate, auraliser.n_fft, auraliser.hop_length, auraliser.n_mels) == (SR, N_FFT, HOP, 64)
    assert auraliser.compression == spectral.Log1p(10000.0, base=10.0) and auraliser.net.input_layer == "log_mel"
    assert (auraliser.takes, auraliser.layout) == ("mel power", "mels_frames")
    frames = 1 + n // HOP
    for mode in auralise.MODES:
        result = auraliser(y, layer=3, features=[0, 4, 7], mode=mode)
        assert result.audio.shape == (2, 3, n)
        assert result.deconvolved.shape == (2, 3, 64, frames) and result.spectrogram.shape == (2, 64, frames)
        audio, silent = result.audio.numpy(), result.silent.numpy()
        assert np.isfinite(audio).all() and not silent.all()
        np.testing.assert_allclose(np.abs(audio).max(axis=-1)[~silent], 0.9, rtol=1e-5)
        assert np.all(audio[silent] == 0)
        # Silent exactly where nothing comes back: no positive log-mel (the inversion clips the rest).
        np.testing.assert_array_equal(silent, result.deconvolved.numpy().max(axis=(2, 3)) <= 0)
    phase, mask = (auraliser(y, layer=2, features=[1], mode=m).audio.numpy() for m in auralise.MODES)
    assert not np.allclose(phase, mask)
    together = auraliser.layers(y, layers=[1, 5], features=[2, 3])
    for layer in (1, 5):
        alone = auraliser(y, layer=layer, features=[2, 3])
        np.testing.assert_allclose(together[layer].audio.numpy(), alone.audio.numpy(), atol=1e-5)


def test_silence_gives_silent_flags_not_nan(rng: np.random.Generator) -> None:
    model = _small_vgg(rng)
    silence = np.zeros((1, model.tfaural_config.segment_length), np.float32)
    # Batch-norm shifts make features respond even to silence; as a mask on a silent STFT they stay silent.
    result = auralise.auralise_mel(model, silence, layer=4, mode="mask")
    assert result.silent.numpy().all() and np.all(result.audio.numpy() == 0)
    assert np.all(result.peak.numpy() == 0)
    assert np.isfinite(auralise.auralise_mel(model, silence, layer=4, mode="phase").audio.numpy()).all()


def test_mel_auraliser_errors(rng: np.random.Generator) -> None:
    model = _small_vgg(rng)
    with pytest.raises(ModelError, match="no axis of n_mels=96 bands"):  # STFT magnitude, not mel
        auralise.MelAuraliser(choi_cnn(n_outputs=3), sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    with pytest.raises(ModelError, match="MelAuraliser"):
        auralise.Auraliser(model)
    with pytest.raises(ParameterError, match="filterbank has shape"):
        auralise.MelAuraliser(model, filterbank=np.ones((64, 100), np.float32))
    with pytest.raises(ParameterError, match="inversion='lbfgs' is invalid"):
        auralise.MelAuraliser(model, inversion="lbfgs")
    with pytest.raises(ParameterError, match="mode='magic' is invalid"):
        auralise.MelAuraliser(model)(np.zeros(24320, np.float32), layer=1, mode="magic")
    with pytest.raises(ParameterError, match="sample_rate=None is invalid"):
        auralise.MelAuraliser(keras.Model(model.inputs, model.outputs))
    tf.debugging.assert_all_finite(auralise.mel_to_linear_power(tf.zeros([64, 3]), np.ones((64, 257))), "zeros")
