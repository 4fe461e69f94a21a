"""tfaural.auralise: reconstruction identities, modes, silence, and waveform models."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from signal_makers import chirp, sine

from tfaural import auralise, spectral
from tfaural.errors import ModelError, ParameterError
from tfaural.models import choi_cnn
from tfaural.models.samplecnn import mel_frame_cnn, samplecnn_model

SR = 2048  # small test rate: n_fft 64, hop 32 -> 33 bins


def _tiny_choi(scaling: str = "linear") -> tf.keras.Model:
    return choi_cnn(n_outputs=3, n_freq=33, n_frames=65, n_fft=64, hop_length=32, n_layers=3, n_filters=4,
                    fc_units=(8,), input_scaling=scaling, sample_rate=SR)


@pytest.mark.parametrize("n_fft,hop", [(512, 256), (64, 32), (729, 243)])
def test_phase_mode_with_the_original_magnitude_reconstructs_the_input(rng: np.random.Generator, n_fft: int,
                                                                       hop: int) -> None:
    y = (chirp(100, 3000, 1.0, sample_rate=11025) + 0.05 * rng.standard_normal(11025)).astype(np.float32)[None]
    stft_matrix = spectral.stft(y, n_fft=n_fft, hop_length=hop)
    magnitude = tf.abs(stft_matrix)[:, tf.newaxis]  # the "deconvolved map" replaced by |X|
    out = auralise.reconstruct(magnitude, stft_matrix, mode="phase", n_fft=n_fft, hop_length=hop, length=11025)
    assert out.shape == (1, 1, 11025)
    np.testing.assert_allclose(out.numpy()[0, 0], y[0], atol=1e-4)
    ones = tf.ones_like(magnitude)  # mask mode with an all-pass mask is also the identity
    out = auralise.reconstruct(ones, stft_matrix, mode="mask", n_fft=n_fft, hop_length=hop, length=11025)
    np.testing.assert_allclose(out.numpy()[0, 0], y[0], atol=1e-4)


def test_mask_and_phase_modes_differ_as_documented(rng: np.random.Generator) -> None:
    y = sine(300, 1.0, sample_rate=SR)[None]
    stft_matrix = spectral.stft(y, n_fft=64, hop_length=32)
    d = tf.constant(rng.uniform(0, 1, (1, 2, *stft_matrix.shape[1:])), tf.float32)
    phase = auralise.reconstruct(d, stft_matrix, mode="phase", n_fft=64, hop_length=32, length=SR).numpy()
    mask = auralise.reconstruct(d, stft_matrix, mode="mask", n_fft=64, hop_length=32, length=SR).numpy()
    mag, ph = spectral.magphase(stft_matrix)
    ref_phase = spectral.istft(tf.cast(d, tf.complex64) * ph[:, None], n_fft=64, hop_length=32, length=SR).numpy()
    ref_mask = spectral.istft(tf.cast(d * mag[:, None], tf.complex64) * ph[:, None], n_fft=64, hop_length=32,
                              length=SR).numpy()
    np.testing.assert_allclose(phase, ref_phase, atol=1e-5)
    np.testing.assert_allclose(mask, ref_mask, atol=1e-5)
    with pytest.raises(ParameterError, match="mode='magic'"):
        auralise.reconstruct(d, stft_matrix, mode="magic", n_fft=64, hop_length=32, length=SR)


@pytest.mark.parametrize("scaling", ["linear", "log"])
def test_choi_auralisation_shapes_and_normalisation(rng: np.random.Generator, scaling: str) -> None:
    model = _tiny_choi(scaling)
    y = np.stack([sine(220, 1.0, sample_rate=SR), chirp(50, 900, 1.0, sample_rate=SR)])
    result = auralise.auralise(model, y, layer=2, features=[0, 1, 3])
    assert result.audio.shape == (2, 3, SR)
    assert result.deconvolved.shape == (2, 3, 33, 1 + SR // 32)
    assert result.spectrogram.shape == (2, 33, 1 + SR // 32)
    audio = result.audio.numpy()
    assert np.isfinite(audio).all()
    peaks = np.abs(audio).max(axis=-1)
    silent = result.silent.numpy()
    np.testing.assert_allclose(peaks[~silent], 0.9, rtol=1e-5)
    assert np.all(peaks[silent] == 0)


def test_silent_input_gives_silence_and_a_flag_not_nan() -> None:
    model = _tiny_choi()
    result = auralise.auralise(model, np.zeros((1, SR), np.float32), layer=3)
    assert result.silent.numpy().all()
    assert np.all(result.audio.numpy() == 0)
    assert np.all(result.peak.numpy() == 0)


def test_log_scaling_is_undone_before_the_inverse_stft() -> None:
    model = _tiny_choi("log")
    config = model.tfaural_config
    x = tf.constant([[0.0, 0.5, 2.0]])
    back = auralise.to_linear_magnitude(spectral.log_compress(x, c=config.log_c), config)
    np.testing.assert_allclose(back.numpy(), x.numpy(), rtol=1e-5)
    assert np.all(auralise.to_linear_magnitude(tf.constant([[-1.0]]), config).numpy() == 0)


def test_samplecnn_auralisation_is_the_normalised_deconvolution(rng: np.random.Generator) -> None:
    model = samplecnn_model(filter_sizes=(3, 3, 3, 3), n_outputs=4, channels=(8, 8, 8), front_filters=8, top_filters=8,
                      sample_rate=SR)
    y = rng.standard_normal((1, 81 * 3)).astype(np.float32) * 0.3
    result = auralise.auralise(model, y, layer=2, features=[1, 2])
    assert result.spectrogram is None and result.audio.shape == (1, 2, 243)
    d = result.deconvolved.numpy()
    for k in range(2):
        if not result.silent.numpy()[0, k]:
            np.testing.assert_allclose(result.audio.numpy()[0, k], 0.9 * d[0, k] / np.abs(d[0, k]).max(), rtol=1e-5,
                                       atol=1e-7)


def test_mel_frame_model_cannot_be_auralised() -> None:
    model = mel_frame_cnn(window=729, hop=729, n_outputs=3)
    with pytest.raises(ModelError, match="mel-frame"):
        auralise.Auraliser(model)


def test_all_layers_at_once_equals_one_layer_at_a_time() -> None:
    model = _tiny_choi()
    y = chirp(50, 900, 1.0, sample_rate=SR)[None]
    auraliser = auralise.Auraliser(model)
    together = auraliser.layers(y, mode="mask")
    assert sorted(together) == [1, 2, 3]
    for layer, result in together.items():
        alone = auraliser(y, layer=layer, mode="mask")
        np.testing.assert_allclose(result.audio.numpy(), alone.audio.numpy(), atol=1e-5)
        np.testing.assert_array_equal(result.silent.numpy(), alone.silent.numpy())


# --------------------------------------------------------------------------- silence in, silence out (issue 17)


def _with_biases(model: tf.keras.Model, rng: np.random.Generator) -> tf.keras.Model:
    """Non-zero biases and weights, as a trained model has: an all-zero input still activates features."""
    for layer in model.layers:
        if layer.name.startswith("conv"):
            w, b = layer.get_weights()
            layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5,
                               np.abs(rng.standard_normal(b.shape)).astype(np.float32) * 0.1 + 0.01])
    return model


@pytest.mark.parametrize("scaling", ["linear", "log"])
@pytest.mark.parametrize("mode", ["phase", "mask"])
def test_digital_silence_in_silence_out(rng: np.random.Generator, scaling: str, mode: str) -> None:
    model = _with_biases(_tiny_choi(scaling), rng)
    auraliser = auralise.Auraliser(model)
    zeros = np.zeros((1, SR), np.float32)
    deconvolved = auraliser.net(tf.abs(spectral.stft(zeros, n_fft=64, hop_length=32)), layer=3).numpy()
    assert np.abs(deconvolved).max() > 0  # the biases make the deconvolution of silence non-zero
    result = auraliser(zeros, layer=3, mode=mode)
    assert result.silent.numpy().all()
    assert not np.any(result.audio.numpy()) and not np.any(result.peak.numpy())
    dither = (rng.standard_normal((1, SR)) * 1e-7).astype(np.float32)  # peak below -120 dBFS: digital silence
    assert auraliser(dither, layer=2, mode=mode).silent.numpy().all()


def test_features_far_below_the_input_level_are_silent(rng: np.random.Generator) -> None:
    model = _with_biases(_tiny_choi(), rng)
    y = chirp(50, 900, 1.0, sample_rate=SR)[None]
    auraliser = auralise.Auraliser(model)
    loud = auraliser(y, layer=3, mode="phase")
    audio = loud.audio.numpy()
    raw = auralise.reconstruct(loud.deconvolved, spectral.stft(y, n_fft=64, hop_length=32), mode="phase", n_fft=64,
                               hop_length=32, length=SR).numpy()
    raw_peak = np.abs(raw).max(axis=-1)
    input_peak = float(np.abs(y).max())
    expected_silent = raw_peak <= auralise.SILENCE_RELATIVE * input_peak  # numpy reference of the rule
    np.testing.assert_array_equal(loud.silent.numpy(), expected_silent)
    assert (~expected_silent).any()  # the chirp makes some features sound
    np.testing.assert_allclose(np.abs(audio).max(axis=-1)[~expected_silent], 0.9, rtol=1e-5)
    # The same maps judged against an input loud enough that each is below -144 dB of it: all silent.
    louder = 1.01 * raw_peak.max() / auralise.SILENCE_RELATIVE
    _, silent, peak = auralise.normalise_peak(tf.constant(raw), input_peak=tf.constant([louder], tf.float32))
    assert silent.numpy().all() and not np.any(peak.numpy())
    # Deep features of real networks deconvolve to ~1e-6 of the input (a product of the layers' gains): kept.
    quiet = tf.constant([[[1e-6, -0.5e-6, 0.0]]])
    normalised, silent, peak = auralise.normalise_peak(quiet, input_peak=tf.constant([1.0]))
    assert not silent.numpy().any() and np.isclose(peak.numpy()[0, 0], 1e-6)
    np.testing.assert_allclose(normalised.numpy(), [[[0.9, -0.45, 0.0]]], rtol=1e-6)
    # ... and against the input's own level, the peaks are the raw ones.
    normalised, silent, peak = auralise.normalise_peak(tf.constant(raw), input_peak=tf.constant([input_peak]))
    np.testing.assert_allclose(peak.numpy()[~expected_silent], raw_peak[~expected_silent], rtol=1e-6)
    np.testing.assert_allclose(normalised.numpy(), audio, rtol=1e-4, atol=1e-6)


def test_samplecnn_silence_in_silence_out(rng: np.random.Generator) -> None:
    model = samplecnn_model(filter_sizes=(3, 3, 3, 3), n_outputs=4, channels=(8, 8, 8), front_filters=8, top_filters=8,
                      sample_rate=SR)
    for layer in model.layers:  # BN shifts make the activations of silence non-zero
        if layer.name.startswith("bn"):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.uniform(0.05, 0.2, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 2, n)])
    auraliser = auralise.Auraliser(model)
    zeros = np.zeros((1, 243), np.float32)
    assert np.abs(auraliser.net(zeros, layer=3).numpy()).max() > 0
    result = auraliser(zeros, layer=3)
    assert result.silent.numpy().all() and not np.any(result.audio.numpy())


def test_auralisation_in_chunks_equals_one_pass(rng: np.random.Generator) -> None:
    model = _with_biases(_tiny_choi("log"), rng)
    y = np.stack([sine(220, 1.0, sample_rate=SR), chirp(50, 900, 1.0, sample_rate=SR)])
    one_pass = auralise.Auraliser(model, chunk_elements=0)(y, layer=2, features=[3, 0, 2], mode="mask")
    chunked = auralise.Auraliser(model, chunk_elements=1)(y, layer=2, features=[3, 0, 2], mode="mask",
                                                          keep_deconvolved=False)
    assert chunked.deconvolved is None
    np.testing.assert_allclose(chunked.audio.numpy(), one_pass.audio.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(chunked.silent.numpy(), one_pass.silent.numpy())
    np.testing.assert_allclose(chunked.peak.numpy(), one_pass.peak.numpy(), rtol=1e-5)
    with pytest.raises(ParameterError, match="repeated"):
        auralise.auralise(model, y, layer=2, features=[1, 1])


def test_the_shortest_clip_is_what_the_layers_need() -> None:
    """The paper's Choi CNN (same-padded 3x3 convolutions, five 2x2 poolings): layer L needs 2^L STFT frames, i.e.
    (2^L - 1) hops of 256 samples (7,936 at layer 5), and one sample less gives an empty map at runtime; a
    SampleCNN needs the one length it is built for (3 x 3 = 9 samples); a waveform model whose walk ends at a
    'valid' convolution needs its receptive field (a 9-tap conv, stride 3, then a 3-pool: 9 + 2 * 3 = 15)."""
    choi = choi_cnn(n_outputs=3)
    auraliser = auralise.Auraliser(choi)
    for level in (1, 3, 5):
        assert auralise.shortest_clip_samples(auraliser, [level], guess=44032) == (2**level - 1) * 256
    assert auralise.shortest_clip_samples(auraliser, [1, 2, 3, 4, 5], guess=100) == 7936  # searched upwards
    short = auraliser.model_input(np.zeros((1, 7935), np.float32))  # 31 frames
    try:
        empty = auraliser.net.layer_outputs(short, [auraliser.net.layer_name(5)])[0].shape.num_elements() == 0
    except (ValueError, tf.errors.OpError):  # oneDNN's pooling refuses an empty output
        empty = True
    assert empty
    sample = samplecnn_model(filter_sizes=(3, 3), n_outputs=2, channels=(4,), front_filters=4, top_filters=4,
                             sample_rate=2000)
    assert auralise.shortest_clip_samples(auralise.Auraliser(sample), [1], guess=5) == 9
    x = tf.keras.Input((None, 1))
    h = tf.keras.layers.MaxPooling1D(3, name="pool")(tf.keras.layers.Conv1D(2, 9, strides=3, activation="relu")(x))
    wave = tf.keras.Model(x, tf.keras.layers.Dense(1)(tf.keras.layers.GlobalMaxPooling1D()(h)))
    assert auralise.shortest_clip_samples(auralise.Auraliser(wave), [1], guess=4000) == 15


def test_the_longest_clip_is_unlimited_unless_a_layer_has_weights_per_frame() -> None:
    """A model built for one input length takes longer clips up to its levels when its layers are size-agnostic
    (a SampleCNN: no limit), and only clips that give its length when a layer has weights per frame: a log-mel
    model of 32 frames with a BatchNormalization over the time axis (the CRNN of Choi et al. 2017) takes up to
    32 * hop - 1 samples (centred frames: 1 + samples // hop of them), a waveform model with a LayerNormalization
    over its 400 samples exactly 400."""
    sample = samplecnn_model(filter_sizes=(3, 3), n_outputs=2, channels=(4,), front_filters=4, top_filters=4,
                             sample_rate=2000)
    assert auralise.longest_clip_samples(auralise.Auraliser(sample), [1]) is None

    def mel_model(norm_axis: int) -> tf.keras.Model:
        x = tf.keras.Input((16, 32, 1))
        h = tf.keras.layers.BatchNormalization(axis=norm_axis)(x)
        h = tf.keras.layers.MaxPooling2D(2, name="pool")(tf.keras.layers.Conv2D(3, 3, padding="same")(h))
        return tf.keras.Model(x, tf.keras.layers.Dense(2)(tf.keras.layers.GlobalMaxPooling2D()(h)))

    settings = {"sample_rate": 4000, "n_fft": 128, "hop_length": 64, "n_mels": 16,
                "compression": spectral.Decibels()}
    per_frame = auralise.MelAuraliser(mel_model(2), **settings)
    longest = auralise.longest_clip_samples(per_frame, [1])
    assert longest == 32 * 64 - 1
    frames = [int(per_frame.model_input(np.zeros((1, n), np.float32)).shape[2]) for n in (longest, longest + 1)]
    assert frames == [32, 33]
    assert auralise.longest_clip_samples(auralise.MelAuraliser(mel_model(-1), **settings), [1]) is None

    x = tf.keras.Input((400,))
    h = tf.keras.layers.LayerNormalization(axis=1)(tf.keras.layers.Reshape((400, 1))(x))
    h = tf.keras.layers.MaxPooling1D(4, name="pool")(tf.keras.layers.Conv1D(2, 9, activation="relu")(h))
    wave = tf.keras.Model(x, tf.keras.layers.Dense(1)(tf.keras.layers.Flatten()(h)))
    assert auralise.longest_clip_samples(auralise.Auraliser(wave), [1]) == 400
