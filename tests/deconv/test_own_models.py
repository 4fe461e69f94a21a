"""The README's recipes ("Your own Keras model") for a model tfaural did not build.

Each model is a small Keras CNN of its input kind (STFT magnitude; mel power compressed by a layer of
its own; a compressed mel spectrogram made outside it, as YAMNet's patches or a librosa dB front end;
the waveform through Keras's own MelSpectrogram layer; the waveform) whose first conv layer passes one
channel through unchanged (a 1x1 kernel of 1, then ReLU), so that the deconvolution of that feature is
known exactly: the input itself (rectified). For a compressed mel spectrogram that channel's bias is
minus the compression's silence, so that it is the rise above silence that :class:`MelAuraliser` reads
a map as, and the auralisation of that feature is the song's own mel spectrogram inverted. The deeper
layers are random, as a user's trained weights would be to these tests.
"""

from __future__ import annotations

import math

import keras
import librosa
import numpy as np
import pytest
import tensorflow as tf
from signal_makers import chirp

from tfaural import auralise, deconv, spectral
from tfaural.errors import ModelError, ParameterError
from tfaural.models.layers import LogMelSpectrogram

SR = 16000
N_FFT, HOP, N_MELS = 512, 256, 64


def _signal() -> np.ndarray:
    """2 s of a 200 -> 2000 Hz chirp over a 330-Hz tone, float32 ``[samples]``."""
    t = np.arange(2 * SR) / SR
    return (chirp(200, 2000, 2.0, sample_rate=SR) + 0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def _cnn(x: keras.KerasTensor, h: keras.KerasTensor, rng: np.random.Generator, *, rank: int, bias: float = 0.0,
         gain: float = 1.0, head: str = "global") -> keras.Model:
    """``h`` -> a 1x1 conv whose channel 0 is ``gain (h + bias)`` -> two random conv blocks -> 5 sigmoid tags
    (after global max pooling, or ``head="flatten"``: a flattened map, so the model takes one input size only)."""
    conv = keras.layers.Conv1D if rank == 1 else keras.layers.Conv2D
    pool = keras.layers.MaxPooling1D if rank == 1 else keras.layers.MaxPooling2D
    glob = keras.layers.GlobalMaxPooling1D if rank == 1 else keras.layers.GlobalMaxPooling2D
    passthrough = conv(4, 1, activation="relu", name="passthrough")
    h = passthrough(h)
    h = pool(2)(conv(8, 3, padding="same", activation="elu", name="block2")(h))
    h = pool(2)(conv(8, 3, padding="same", activation="relu", name="block3")(h))
    h = glob()(h) if head == "global" else keras.layers.Flatten()(h)
    model = keras.Model(x, keras.layers.Dense(5, activation="sigmoid")(h))
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in weights])
    kernel, bias_vector = passthrough.get_weights()
    kernel[..., 0, 0], bias_vector[0] = gain, gain * bias
    passthrough.set_weights([kernel, bias_vector])
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


def _correlation(a: tf.Tensor | np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a), b)[0, 1])


def test_a_yamnet_shaped_model_on_log_mel_patches_made_outside_it(rng: np.random.Generator) -> None:
    """YAMNet's input: [96 frames, 64 bands, 1] patches of ln(mel magnitude + 0.001), 10-ms hop; a flattening
    head, so the model takes patches of 96 frames only."""
    hop, frames = 160, 96
    x = keras.Input((frames, N_MELS, 1))
    model = _cnn(x, x, rng, rank=2, bias=-math.log(0.001), head="flatten")
    y = _signal()[: (frames - 1) * hop]
    auraliser = auralise.MelAuraliser(model, sample_rate=SR, n_fft=N_FFT, hop_length=hop, n_mels=N_MELS, power=1.0,
                                      compression=spectral.LogOffset(0.001))
    assert (auraliser.takes, auraliser.layout) == ("compressed mel", "frames_mels")
    result = auraliser(y[None], layer=1, features=[0])
    mel = auraliser.mel_input(y[None])[1].numpy()
    assert result.deconvolved.shape == (1, 1, N_MELS, frames)  # [n_mels, frames], whatever the model's layout
    np.testing.assert_allclose(result.deconvolved[0, 0].numpy(), np.log(mel[0] + 0.001) - np.log(0.001), rtol=1e-4,
                               atol=1e-4)  # the rise above silence
    assert _correlation(result.audio[0, 0], y) > 0.9  # the song's own log-mel, inverted
    deep = auraliser(y[None], layer=3, features=[0, 5]).audio
    assert deep.shape == (1, 2, len(y)) and np.isfinite(deep.numpy()).all()
    longer = _signal()[: 100 * hop][None]
    assert auraliser(longer, layer=2, features=[0]).audio.shape == (1, 1, 100 * hop)  # the convolutions take any size
    with pytest.raises(ParameterError, match=r"built for 96 frames and this clip gives 101 .* 15200 to 15359 samples"):
        auraliser(longer, layer=model.layers[-1].name, features=[0])  # the tags, through the flattened map


def test_a_model_on_librosa_decibels_is_heard_at_the_level_of_its_input(rng: np.random.Generator) -> None:
    """librosa.power_to_db(mel, ref=np.max) (top_db 80) made outside the model: silence is -80 dB; the level rule
    makes the auralisation independent of the deconvolution's gain."""
    x = keras.Input((N_MELS, None, 1))
    y = _signal()
    compression = spectral.Decibels(ref="max")
    heard = []
    for gain in (1.0, 7.0):
        model = _cnn(x, x, np.random.default_rng(5), rank=2, bias=80.0, gain=gain)
        auraliser = auralise.MelAuraliser(model, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
                                          compression=compression)
        assert (auraliser.takes, auraliser.layout) == ("compressed mel", "mels_frames")
        result = auraliser(y[None], layer=1, features=[0])
        mel = auraliser.mel_input(y[None])[1].numpy()
        expected = gain**2 * (librosa.power_to_db(mel[0], ref=np.max) + 80)  # forward, then back, through the gain
        np.testing.assert_allclose(result.deconvolved[0, 0].numpy(), expected, rtol=1e-4, atol=1e-3 * gain**2)
        heard.append(result.audio[0, 0].numpy())
        level_free = auralise.MelAuraliser(model, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
                                           compression=compression, match_input_level=False)
        heard.append(level_free(y[None], layer=1, features=[0]).audio[0, 0].numpy())
    assert _correlation(heard[0], y) > 0.9
    np.testing.assert_allclose(heard[2], heard[0], atol=1e-5)  # 49 times the map: the same sound
    assert _correlation(heard[1], heard[3]) < 0.9  # taken literally, 49 times the dynamic range


def test_a_model_on_a_decibel_stft(rng: np.random.Generator) -> None:
    """librosa.amplitude_to_db(|STFT|, ref=np.max) [freq, frames, 1]: no mel bands (filterbank="linear"), so the
    way back loses nothing but what lies under the 80-dB floor."""
    x = keras.Input((N_FFT // 2 + 1, None, 1))
    model = _cnn(x, x, rng, rank=2, bias=80.0)
    compression = spectral.Decibels(amin=1e-5, ref="max", multiplier=20.0)
    auraliser = auralise.MelAuraliser(model, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, filterbank="linear",
                                      power=1.0, compression=compression)
    assert auraliser.n_mels == N_FFT // 2 + 1 and auraliser.layout == "mels_frames"
    y = _signal()
    result = auraliser(y[None], layer=1, features=[0])
    magnitude = np.abs(spectral.stft(y, n_fft=N_FFT, hop_length=HOP).numpy())
    np.testing.assert_allclose(result.deconvolved[0, 0].numpy(),
                               librosa.amplitude_to_db(magnitude, ref=np.max) + 80, rtol=1e-4, atol=2e-3)
    assert _correlation(result.audio[0, 0], y) > 0.99
    with pytest.raises(ParameterError, match="filterbank='htk' is invalid"):
        auralise.MelAuraliser(model, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, filterbank="htk",
                              compression=compression)


def test_a_1d_cnn_over_time_with_the_bands_as_channels(rng: np.random.Generator) -> None:
    """[frames, n_mels] without a channel axis (the bands are the Conv1D's channels), dB without top_db: the
    first layer passes each band through as its own feature, so feature b's map is band b's rise and nothing else."""
    x = keras.Input((None, N_MELS))
    passthrough = keras.layers.Conv1D(N_MELS, 1, activation="relu", name="passthrough")
    h = keras.layers.MaxPooling1D(2)(keras.layers.Conv1D(8, 3, activation="elu", name="block2")(passthrough(x)))
    model = keras.Model(x, keras.layers.Dense(5)(keras.layers.GlobalMaxPooling1D()(h)))
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in layer.get_weights()])
    passthrough.set_weights([np.eye(N_MELS, dtype=np.float32)[None], np.full(N_MELS, 100.0, np.float32)])
    compression = spectral.Decibels(top_db=None)
    auraliser = auralise.MelAuraliser(model, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
                                      compression=compression)
    assert auraliser.layout == "frames_mels"
    y = _signal()
    result = auraliser(y[None], layer=1, features=[5, 40])
    rise = (compression(auraliser.mel_input(y[None])[1]) + 100.0).numpy()[0]
    for i, band in enumerate((5, 40)):
        expected = np.zeros_like(rise)
        expected[band] = rise[band]
        np.testing.assert_allclose(result.deconvolved[0, i].numpy(), expected, rtol=1e-4, atol=1e-3)
    assert np.isfinite(result.audio.numpy()).all() and not result.silent.numpy().any()


def test_a_model_with_keras_own_mel_spectrogram_layer(rng: np.random.Generator) -> None:
    """The waveform in, keras.layers.MelSpectrogram (dB, top_db 80) inside: every setting is read from the layer."""
    y = _signal()
    x = keras.Input((None,))
    front = keras.layers.MelSpectrogram(fft_length=N_FFT, sequence_stride=HOP, sampling_rate=SR,
                                        num_mel_bins=N_MELS, name="mel")
    keras_db = keras.ops.convert_to_numpy(front(y[None]))[0]  # [n_mels, frames]
    silence = float(keras_db.max()) - 80.0  # for this song: the top_db floor
    model = _cnn(x, keras.layers.Lambda(lambda m: m[..., None])(front(x)), rng, rank=2, bias=-silence)
    auraliser = auralise.MelAuraliser(model)
    assert (auraliser.takes, auraliser.net.input_layer) == ("waveform", "mel")
    assert (auraliser.sample_rate, auraliser.n_fft, auraliser.hop_length, auraliser.n_mels, auraliser.power) == (
        SR, N_FFT, HOP, N_MELS, 2.0)
    assert auraliser.compression == spectral.Decibels(amin=1e-10, ref=1.0, top_db=80.0)
    mel_weights = keras.ops.convert_to_numpy(front.linear_to_mel_weight_matrix(
        num_mel_bins=N_MELS, num_spectrogram_bins=N_FFT // 2 + 1, sampling_rate=SR, lower_edge_hertz=front.min_freq,
        upper_edge_hertz=front.max_freq))
    np.testing.assert_array_equal(auraliser.filterbank, mel_weights.T)
    result = auraliser(y[None], layer=1, features=[0])
    # Keras's frames are tfaural's but for the reflect-padded edges
    np.testing.assert_allclose(result.deconvolved[0, 0].numpy()[:, 2:-2], (keras_db - silence)[:, 2:-2], rtol=1e-4,
                               atol=2e-3)
    assert _correlation(result.audio[0, 0], y) > 0.9
    with pytest.raises(ParameterError, match="n_fft=1024 conflicts with the model's MelSpectrogram layer 'mel'"):
        auralise.MelAuraliser(model, n_fft=1024)
    hamming_front = keras.layers.MelSpectrogram(window="hamming", sampling_rate=SR, num_mel_bins=N_MELS)
    hamming = _cnn(x, keras.layers.Lambda(lambda m: m[..., None])(hamming_front(x)), rng, rank=2)
    with pytest.raises(ModelError, match=r"window='hamming'.*periodic Hann"):
        auralise.MelAuraliser(hamming)


def test_a_model_on_a_compressed_mel_spectrogram_must_say_how(rng: np.random.Generator) -> None:
    x = keras.Input((N_MELS, None, 1))
    model = _cnn(x, x, rng, rank=2)
    with pytest.raises(ModelError, match=r"takes its input as it is.*compression="):
        auralise.MelAuraliser(model, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    with pytest.raises(ModelError, match="no axis of n_mels=96"):
        auralise.MelAuraliser(model, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=96,
                              compression=spectral.Decibels())
    with pytest.raises(ParameterError, match="log_c= or compression=, not both"):
        auralise.MelAuraliser(model, log_c=10.0, compression=spectral.Decibels())
    square_input = keras.Input((N_MELS, N_MELS, 1))
    square = _cnn(square_input, square_input, rng, rank=2)
    settings = {"sample_rate": SR, "n_fft": N_FFT, "hop_length": HOP, "n_mels": N_MELS,
                "compression": spectral.Decibels()}
    with pytest.raises(ParameterError, match="both axes have n_mels=64 sizes; pass layout="):
        auralise.MelAuraliser(square, **settings)
    assert auralise.MelAuraliser(square, layout="frames_mels", **settings).layout == "frames_mels"


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


def test_a_front_end_that_is_no_compression_of_the_input_is_named(rng: np.random.Generator) -> None:
    x = keras.Input((None, 1))
    mel = LogMelSpectrogram(sample_rate=SR, n_fft=N_FFT, window=N_FFT, hop=HOP, n_mels=N_MELS, name="logmel")(x)
    model = _cnn(x, keras.layers.Lambda(lambda s: s[..., None])(mel), rng, rank=2)
    assert deconv.DeconvNet(model).input_layer == "logmel"  # the deconvolution ends at the spectrogram it makes
    with pytest.raises(ModelError, match=r"layer 'logmel' \(LogMelSpectrogram.*not a bin-by-bin compression"):
        auralise.MelAuraliser(model, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
                              compression=spectral.Log1p(10.0))


def test_an_stft_front_end_trained_away_from_the_dft_is_named(rng: np.random.Generator) -> None:
    """``_cnn`` draws every layer's weights, the STFTSpectrogram's kernels too: no inverse STFT hears them."""
    x = keras.Input((None, 1))
    stft = keras.layers.STFTSpectrogram(frame_length=N_FFT, frame_step=HOP, padding="same", name="stft")(x)
    model = _cnn(x, keras.layers.Lambda(lambda s: s[..., None])(stft), rng, rank=2)
    assert deconv.DeconvNet(model).input_layer == "stft"  # the deconvolution ends at the spectrogram it makes
    with pytest.raises(ModelError, match=r"STFTSpectrogram layer 'stft' has kernels that are not its window's DFT"):
        auralise.MelAuraliser(model, sample_rate=SR)
