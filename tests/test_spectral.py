"""tfaural.spectral against librosa (independent reference) and round-trip identities."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import tensorflow as tf

from tfaural import spectral
from tfaural.errors import ParameterError

N_FFTS = [512, 729, 1024]


def _signal(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / 22050
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n_fft", N_FFTS)
@pytest.mark.parametrize("hop_div", [2, 4])
def test_stft_matches_librosa(rng: np.random.Generator, n_fft: int, hop_div: int) -> None:
    y = _signal(rng, 11025)
    hop = n_fft // hop_div
    ours = spectral.stft(y, n_fft=n_fft, hop_length=hop).numpy()
    ref = librosa.stft(y, n_fft=n_fft, hop_length=hop, center=True)
    assert ours.shape == ref.shape
    # Relative to the largest coefficient: float32 FFT rounding is ~1e-7 of it.
    assert np.max(np.abs(ours - ref)) / np.max(np.abs(ref)) <= 1e-4


@pytest.mark.parametrize("n_fft,win_length", [(729, 243), (729, 81), (1024, 400)])
def test_stft_short_window_matches_librosa(rng: np.random.Generator, n_fft: int, win_length: int) -> None:
    y = _signal(rng, 8000)
    ours = spectral.stft(y, n_fft=n_fft, hop_length=win_length // 2, win_length=win_length).numpy()
    ref = librosa.stft(y, n_fft=n_fft, hop_length=win_length // 2, win_length=win_length, center=True)
    assert np.max(np.abs(ours - ref)) / np.max(np.abs(ref)) <= 1e-4


def test_stft_uncentred_matches_librosa(rng: np.random.Generator) -> None:
    y = _signal(rng, 59049)
    ours = spectral.stft(y, n_fft=729, hop_length=243, center=False).numpy()
    ref = librosa.stft(y, n_fft=729, hop_length=243, center=False)
    assert ours.shape == ref.shape == (365, spectral.n_frames(59049, n_fft=729, hop_length=243, center=False))
    assert np.max(np.abs(ours - ref)) / np.max(np.abs(ref)) <= 1e-4


@pytest.mark.parametrize("n_fft", N_FFTS)
@pytest.mark.parametrize("hop_div", [2, 4])
@pytest.mark.parametrize("length", [4096, 4097, 11025])
def test_istft_inverts_stft_including_edges(rng: np.random.Generator, n_fft: int, hop_div: int, length: int) -> None:
    y = _signal(rng, length)
    hop = n_fft // hop_div
    y_hat = spectral.istft(spectral.stft(y, n_fft=n_fft, hop_length=hop), n_fft=n_fft, hop_length=hop, length=length)
    assert y_hat.shape == (length,)
    err = np.abs(y_hat.numpy() - y)
    assert err.max() <= 1e-5, f"max error {err.max()}"
    edge = n_fft // 2  # the first and last half-window are where uncentred STFTs fail
    assert err[:edge].max() <= 1e-5 and err[-edge:].max() <= 1e-5


def test_istft_matches_librosa_istft(rng: np.random.Generator) -> None:
    spec = librosa.stft(_signal(rng, 6000), n_fft=512, hop_length=128)
    spec = spec * rng.uniform(0.2, 1.0, size=spec.shape)  # not a consistent STFT any more
    ours = spectral.istft(spec.astype(np.complex64), hop_length=128, length=6000).numpy()
    ref = librosa.istft(spec, hop_length=128, length=6000)
    assert np.max(np.abs(ours - ref)) <= 1e-5


def test_batched_and_unknown_shapes_under_tf_function(rng: np.random.Generator) -> None:
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def roundtrip(y: tf.Tensor) -> tf.Tensor:
        spec = spectral.stft(y, n_fft=512, hop_length=256)
        return spectral.istft(spec, n_fft=512, hop_length=256, length=tf.shape(y)[-1])

    batch = np.stack([_signal(rng, 5000), _signal(rng, 5000)])
    out = roundtrip(batch).numpy()
    assert out.shape == batch.shape
    np.testing.assert_allclose(out, batch, atol=1e-5)
    for i in range(2):
        np.testing.assert_allclose(
            spectral.stft(batch, n_fft=512, hop_length=256).numpy()[i],
            librosa.stft(batch[i], n_fft=512, hop_length=256),
            atol=1e-4 * np.abs(batch[i]).sum(),
        )


def test_magphase_matches_librosa(rng: np.random.Generator) -> None:
    spec = librosa.stft(_signal(rng, 4000), n_fft=512, hop_length=256)
    spec[0, 0] = 0  # phase of an exact zero is 1, as in librosa
    mag, phase = spectral.magphase(tf.constant(spec))
    ref_mag, ref_phase = librosa.magphase(spec)
    np.testing.assert_allclose(mag.numpy(), ref_mag, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(phase.numpy(), ref_phase, atol=1e-5)
    np.testing.assert_allclose((tf.cast(mag, tf.complex64) * phase).numpy(), spec, atol=1e-4)


@pytest.mark.parametrize("n_fft,hop,power", [(512, 256, 2.0), (729, 243, 1.0), (1024, 512, 2.0)])
def test_mel_matches_librosa(rng: np.random.Generator, n_fft: int, hop: int, power: float) -> None:
    y = _signal(rng, 22050)
    ours = spectral.melspectrogram(y, sample_rate=22050, n_fft=n_fft, hop_length=hop, n_mels=128, power=power).numpy()
    ref = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=n_fft, hop_length=hop, n_mels=128, power=power)
    assert ours.shape == ref.shape == (128, 1 + 22050 // hop)
    assert np.max(np.abs(ours - ref)) / np.max(ref) <= 1e-4


@pytest.mark.parametrize("sr,n_fft,fmax", [(22050, 729, None), (16000, 512, 7000.0), (11025, 512, None)])
def test_mel_filterbank_matches_librosa(sr: int, n_fft: int, fmax: float | None) -> None:
    ours = spectral.mel_filterbank(sample_rate=sr, n_fft=n_fft, n_mels=128, fmax=fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=128, fmax=fmax)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("htk,norm", [(True, None), (True, "slaney"), (False, None)])
def test_htk_and_unnormalised_mel_filterbanks_match_librosa(htk: bool, norm: str | None) -> None:
    """YAMNet's bank among them: 64 HTK bands, 125-7500 Hz, peaks of 1."""
    ours = spectral.mel_filterbank(sample_rate=16000, n_fft=512, n_mels=64, fmin=125.0, fmax=7500.0, htk=htk,
                                   norm=norm)
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=125.0, fmax=7500.0, htk=htk, norm=norm)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    with pytest.raises(ParameterError, match="norm='l2' is invalid"):
        spectral.mel_filterbank(sample_rate=16000, n_fft=512, norm="l2")


def test_log_compress_and_inverse() -> None:
    x = np.array([0.0, 0.1, -1.0, 10.0], np.float32)
    np.testing.assert_allclose(spectral.log_compress(x).numpy(), np.log1p(10 * np.abs(x)), rtol=1e-6)
    np.testing.assert_allclose(spectral.log_decompress(spectral.log_compress(np.abs(x))).numpy(), np.abs(x), rtol=1e-5)
    with pytest.raises(ParameterError, match="c=0"):
        spectral.log_compress(x, c=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_fft": 1, "hop_length": 1}, "n_fft=1"),
        ({"n_fft": 512, "hop_length": 0}, "hop_length=0"),
        ({"n_fft": 512, "hop_length": 600}, "hop_length=600"),
        ({"n_fft": 512, "hop_length": 128, "win_length": 1024}, "win_length=1024"),
    ],
)
def test_invalid_parameters_name_the_value(kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        spectral.stft(np.zeros(1000, np.float32), **kwargs)


def test_n_frames_matches_stft() -> None:
    for n in (1000, 44100, 59049):
        spec = spectral.stft(np.zeros(n, np.float32), n_fft=512, hop_length=256)
        assert spec.shape[-1] == spectral.n_frames(n, n_fft=512, hop_length=256)
    # The Choi recipe: 4 s at 11,025 Hz, 512-point FFT, hop 256 -> 257 x 173.
    assert spectral.stft(np.zeros(44100, np.float32), n_fft=512, hop_length=256).shape == (257, 173)


def _powers(rng: np.random.Generator) -> np.ndarray:
    """float32 ``[2, 64, 50]`` power spectrograms over 14 decades, with exact zeros (silence)."""
    x = (10.0 ** rng.uniform(-12, 2, (2, 64, 50))).astype(np.float32)
    x[0, :3] = 0.0
    x[1] *= 1e-3  # another level: the per-spectrogram references differ
    return x


@pytest.mark.parametrize(
    "compression,reference",
    [
        (spectral.Decibels(), lambda s: librosa.power_to_db(s)),
        (spectral.Decibels(ref="max"), lambda s: librosa.power_to_db(s, ref=np.max)),
        (spectral.Decibels(ref=1e-3, top_db=None), lambda s: librosa.power_to_db(s, ref=1e-3, top_db=None)),
        (spectral.Decibels(amin=1e-5, multiplier=20.0, top_db=60.0),
         lambda s: librosa.amplitude_to_db(np.sqrt(s), top_db=60.0)),
        (spectral.LogOffset(0.001), lambda s: np.log(s + 0.001)),
        (spectral.LogOffset(0.01, base=10.0), lambda s: np.log10(s + 0.01)),
        (spectral.Log1p(10000.0), lambda s: np.log10(1 + 10000 * s)),
        (spectral.Log1p(10.0, base=np.e), lambda s: np.log1p(10 * s)),
        (spectral.Linear(), lambda s: s),
    ],
    ids=["db", "db-ref-max", "db-ref-no-top", "amplitude-db", "log-offset", "log10-offset", "log10-1p", "ln-1p",
         "linear"],
)
def test_compressions_are_librosas_and_numpys_per_spectrogram(
    rng: np.random.Generator, compression: spectral.Compression, reference: object
) -> None:
    x = _powers(rng)
    amplitude = isinstance(compression, spectral.Decibels) and compression.multiplier == 20
    ours = compression(np.sqrt(x) if amplitude else x).numpy()  # amplitude_to_db is of magnitudes
    expected = np.stack([reference(s.astype(np.float64)) for s in x])  # type: ignore[operator]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)


def test_decibels_are_keras_melspectrograms(rng: np.random.Generator) -> None:
    import keras

    layer = keras.layers.MelSpectrogram(sampling_rate=16000, num_mel_bins=64)
    x = _powers(rng)[:1]
    keras_db = keras.ops.convert_to_numpy(layer._dbscale(keras.ops.convert_to_tensor(x)))  # its own dB step
    np.testing.assert_allclose(spectral.Decibels()(x).numpy(), keras_db, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "compression",
    [spectral.Decibels(), spectral.Decibels(ref="max", top_db=60.0), spectral.Decibels(top_db=None),
     spectral.LogOffset(0.001), spectral.Log1p(10000.0), spectral.Log1p(10.0, base=np.e), spectral.Linear()],
    ids=["db", "db-max-60", "db-no-top", "log-offset", "log10-1p", "ln-1p", "linear"],
)
def test_expand_is_the_way_back_from_a_rise_above_silence(
    rng: np.random.Generator, compression: spectral.Compression
) -> None:
    x = _powers(rng)
    silence = compression.silence(x).numpy()
    assert silence.shape == (2, 1, 1)
    with_silence = x.copy()
    with_silence[:, 0, 0] = 0.0
    np.testing.assert_allclose(compression(with_silence).numpy()[:, :1, :1], silence, rtol=1e-5, atol=1e-4)
    back = compression.expand(compression(x) - silence, x).numpy()
    assert np.all(compression.expand(tf.zeros_like(x), x).numpy() == 0)  # no rise: no power
    if isinstance(compression, spectral.Decibels):  # below the floor everything is silence: max(x, p0) - p0
        floor = (10.0 ** ((silence + compression.multiplier * np.log10(np.maximum(
            x.max(axis=(-2, -1), keepdims=True) if compression.ref == "max" else compression.ref, compression.amin)))
            / compression.multiplier)).astype(np.float64)
        expected = np.maximum(x, floor) - floor
    else:
        expected = x
    np.testing.assert_allclose(back, expected, rtol=2e-3, atol=1e-6 * x.max())


def test_compression_settings_are_checked() -> None:
    for make, match in [(lambda: spectral.Log1p(0.0), "c=0.0"), (lambda: spectral.Log1p(10.0, base=1.0), "base=1.0"),
                        (lambda: spectral.LogOffset(-1.0), "offset=-1.0"),
                        (lambda: spectral.Decibels(ref="min"), "ref='min'"),
                        (lambda: spectral.Decibels(top_db=0.0), "top_db=0.0"),
                        (lambda: spectral.Decibels(amin=float("nan")), "amin=nan")]:
        with pytest.raises(ParameterError, match=match):
            make()


@pytest.mark.parametrize("form,power", [("db", 2.0), ("db-max", 2.0), ("db", 1.0), ("linear", 2.0),
                                        ("log10-1p:10000", 2.0), ("ln-1p:10", 1.0), ("ln-offset:0.001", 1.0),
                                        ("log10-offset:3.1622776601683795e-05", 2.0)])
def test_compression_spec_names_the_form_that_makes_the_compression_again(form: str, power: float) -> None:
    """metadata.json's words for a compression: the form of the flags, with top_db and amin of a dB one; read back
    by compression_from_spec, they make the same compression (equal dataclasses: the same numbers)."""
    made = spectral.compression_from_spec(form, power=power, top_db=70.0, amin=None)
    spec = spectral.compression_spec(made)
    assert spec["compression"] == form
    again = spectral.compression_from_spec(spec["compression"], power=power, top_db=spec.get("top_db"),
                                           amin=spec.get("amin"))
    assert again == made
    if form.startswith("db"):
        assert spec["top_db"] == 70.0 and spec["amin"] == (1e-5 if power == 1.0 else 1e-10)
        assert set(spec) == {"compression", "top_db", "amin"} | ({"multiplier"} if power == 1.0 else set())


def test_compression_spec_names_a_reference_other_than_librosa_s() -> None:
    keras_db = spectral.Decibels(amin=1e-10, ref=2.0, top_db=80.0)  # keras.layers.MelSpectrogram(ref_power=2)
    assert spectral.compression_spec(keras_db) == {"compression": "db", "top_db": 80.0, "amin": 1e-10, "ref": 2.0}
