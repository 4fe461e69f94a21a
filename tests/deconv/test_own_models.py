"""The README's recipes ("Your own Keras model") for a model tfaural did not build.

Each model is a small Keras CNN of its input kind (STFT magnitude, mel power compressed by a layer of
its own, waveform) whose first conv layer passes one channel through unchanged (a 1x1 kernel of 1, then
ReLU), so that the deconvolution of that feature is known exactly: the input itself (rectified). The
deeper layers are random, as a user's trained weights would be to these tests.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from signal_makers import chirp

from tfaural import auralise, deconv, spectral

SR = 16000
N_FFT, HOP, N_MELS = 512, 256, 64


def _signal() -> np.ndarray:
    """2 s of a 200 -> 2000 Hz chirp over a 330-Hz tone, float32 ``[samples]``."""
    t = np.arange(2 * SR) / SR
    return (chirp(200, 2000, 2.0, sample_rate=SR) + 0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def _cnn(x: keras.KerasTensor, h: keras.KerasTensor, rng: np.random.Generator, *, rank: int) -> keras.Model:
    """``h`` -> a 1x1 conv whose channel 0 is ``h`` itself -> two random conv blocks -> 5 sigmoid tags."""
    conv = keras.layers.Conv1D if rank == 1 else keras.layers.Conv2D
    pool = keras.layers.MaxPooling1D if rank == 1 else keras.layers.MaxPooling2D
    glob = keras.layers.GlobalMaxPooling1D if rank == 1 else keras.layers.GlobalMaxPooling2D
    passthrough = conv(4, 1, activation="relu", name="passthrough")
    h = passthrough(h)
    h = pool(2)(conv(8, 3, padding="same", activation="elu", name="block2")(h))
    h = pool(2)(conv(8, 3, padding="same", activation="relu", name="block3")(h))
    model = keras.Model(x, keras.layers.Dense(5, activation="sigmoid")(glob()(h)))
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in weights])
    kernel, bias = passthrough.get_weights()
    kernel[..., 0, 0], bias[0] = 1.0, 0.0
    passthrough.set_weights([kernel, bias])
    return model


def test_a_model_on_stft_magnitude(rng: np.random.Generator) -> None:
    x = keras.Input((N_FFT // 2 + 1, None, 1))
    model = _cnn(x, x, rng, rank=2)
    y = _signal()
    stft = spectral.stft(y[None], n_fft=N_FFT, hop_length=HOP)
    maps = deconv.deconvolve(model, tf.abs(stft), layer=1, features=[0, 2])
    assert maps.shape == (1, 2, N_FFT // 2 + 1, stft.shape[-1])
    np.testing.assert_allclose(maps[0, 0].numpy(), tf.abs(stft)[0].numpy(), rtol=1e-5, atol=1e-6)
    heard, silent, _ = auralise.normalise_peak(auralise.reconstruct(
        tf.nn.relu(maps), stft, mode="phase", n_fft=N_FFT, hop_length=HOP, length=len(y)))
    assert heard.shape == (1, 2, len(y)) and not bool(silent[0, 0])
    assert np.corrcoef(heard[0, 0].numpy(), y)[0, 1] > 0.999  # the song's own magnitude and phase: the song
    deep, _, _ = auralise.normalise_peak(auralise.reconstruct(
        tf.nn.relu(deconv.deconvolve(model, tf.abs(stft), layer=3, features=[0, 5])), stft, mode="phase",
        n_fft=N_FFT, hop_length=HOP, length=len(y)))
    assert np.isfinite(deep.numpy()).all() and deep.shape == (1, 2, len(y))


def test_a_model_on_mel_power_it_compresses_itself(rng: np.random.Generator) -> None:
    x = keras.Input((N_MELS, None, 1))
    log_mel = keras.layers.Lambda(lambda m: tf.math.log(1 + 10000 * m) / tf.math.log(10.0), name="log_mel")(x)
    model = _cnn(x, log_mel, rng, rank=2)
    y = _signal()
    auraliser = auralise.MelAuraliser(model, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
                                      input_layer="log_mel", log_c=10000)
    result = auraliser(y[None], layer=1, features=[0])
    # the song's own log-mel, inverted: as tests/deconv/test_mel_auralise.py finds of a true log-mel
    assert np.corrcoef(result.audio[0, 0].numpy(), y)[0, 1] > 0.9
    deep = auraliser(y[None], layer=3, features=[0, 5]).audio
    assert deep.shape == (1, 2, len(y)) and np.isfinite(deep.numpy()).all()


@pytest.mark.parametrize("method", deconv.METHODS)
def test_a_model_on_the_waveform(rng: np.random.Generator, method: str) -> None:
    x = keras.Input((None, 1))
    model = _cnn(x, x, rng, rank=1)
    y = _signal()
    waves = deconv.deconvolve(model, y[None], layer=1, features=[0], method=method)
    np.testing.assert_allclose(waves[0, 0].numpy(), np.maximum(y, 0), rtol=1e-6, atol=1e-7)  # the ReLU's only
    heard, _, _ = auralise.normalise_peak(deconv.deconvolve(model, y[None], layer=3, features=[0, 5],
                                                             method=method))
    assert heard.shape == (1, 2, len(y)) and np.isfinite(heard.numpy()).all()
