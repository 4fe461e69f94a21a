"""The one spectrogram renderer (tfaural.spectrogram_images), against librosa and matplotlib."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tfaural.errors import ParameterError
from tfaural.spectrogram_images import (
    full_scale_db,
    render_spectrogram,
    resize_power,
    spectrogram_db,
    stft_magnitude,
)


@pytest.mark.parametrize(("n_fft", "hop_length"), [(512, 512), (512, 128), (64, 16), (729, 243)])
def test_spectrogram_db_matches_librosa(rng: np.random.Generator, n_fft: int, hop_length: int) -> None:
    import librosa

    t = np.arange(22050) / 22050
    y = (0.6 * np.sin(2 * np.pi * 441 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
    db = spectrogram_db(y, n_fft=n_fft, hop_length=hop_length)
    # librosa's "hann" is periodic (scipy get_window, fftbins=True); edges reflected as the renderer pads them
    reference = np.abs(librosa.stft(y.astype(np.float64), n_fft=n_fft, hop_length=hop_length, center=True,
                                    window="hann", pad_mode="reflect"))
    assert db.shape == reference.shape == (n_fft // 2 + 1, 1 + len(y) // hop_length) and db.dtype == np.float32
    # float32 frames: within 1e-3 dB wherever the bin is within 80 dB of the loudest one
    loud = reference > reference.max() * 1e-4
    np.testing.assert_allclose(db[loud], 20 * np.log10(reference[loud]), atol=1e-3)
    np.testing.assert_allclose(stft_magnitude(y, n_fft=n_fft, hop_length=hop_length), reference,
                               atol=2e-6 * reference.max())


def test_full_scale_sine_peaks_at_full_scale_db() -> None:
    n_fft = 256
    t = np.arange(8192)
    sine = np.sin(2 * np.pi * 16 * t / n_fft).astype(np.float32)  # on the centre of bin 16
    db = spectrogram_db(sine, n_fft=n_fft, hop_length=64)[:, 4:-4]
    assert np.all(np.argmax(db, axis=0) == 16)
    np.testing.assert_allclose(db[16], full_scale_db(n_fft), atol=1e-3)


def test_silence_and_very_short_signals_are_finite() -> None:
    assert np.all(spectrogram_db(np.zeros(100, np.float32), n_fft=64, hop_length=16) == np.float32(-200.0))
    short = spectrogram_db(np.ones(5, np.float32), n_fft=64, hop_length=16)
    assert short.shape == (33, 1) and np.all(np.isfinite(short))
    with pytest.raises(ParameterError, match="hop_length=0"):
        spectrogram_db(np.ones(5, np.float32), n_fft=64, hop_length=0)


def test_resize_power_averages_by_area(rng: np.random.Generator) -> None:
    power = rng.uniform(0.0, 1.0, (257, 173))
    np.testing.assert_array_equal(resize_power(power, height=257, width=173), power)  # same size: unchanged
    wide = resize_power(power, height=160, width=320)
    assert wide.shape == (160, 320)
    # area averaging keeps the mean power (every input cell counts by the area it covers)
    np.testing.assert_allclose(wide.mean(), power.mean(), rtol=1e-12)
    # stretching a constant column block repeats it; halving averages pairs
    steps = np.repeat(np.arange(4.0)[np.newaxis], 2, axis=0)  # [2, 4]
    np.testing.assert_allclose(resize_power(steps, height=2, width=8), np.repeat(steps, 2, axis=1))
    np.testing.assert_allclose(resize_power(steps, height=1, width=2), [[0.5, 2.5]])
    with pytest.raises(ParameterError, match="width=0"):
        resize_power(steps, height=1, width=0)


def test_palette_png_has_the_colours_of_matplotlib_imsave(rng: np.random.Generator) -> None:
    from PIL import Image

    db = rng.uniform(-120.0, 10.0, (33, 65)).astype(np.float32)  # also below and above the scale
    rgba = render_spectrogram(db, vmin=-80.0, vmax=0.0)
    palette = render_spectrogram(db, vmin=-80.0, vmax=0.0, palette=True)
    with Image.open(io.BytesIO(rgba)) as a, Image.open(io.BytesIO(palette)) as b:
        assert a.size == b.size == (65, 33) and b.mode == "P"
        np.testing.assert_array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
        # low frequencies at the bottom: row 0 of db is the last row of the picture
        top_left = np.asarray(a.convert("RGB"))[-1, 0]
    from matplotlib import colormaps

    index = int(np.clip(np.floor((db[0, 0] + 80.0) / 80.0 * 256), 0, 255))
    assert tuple(top_left) == tuple(np.asarray(colormaps["magma"].resampled(256)(index, bytes=True))[:3])
    with pytest.raises(ParameterError, match="not a matplotlib colour map"):
        render_spectrogram(db, vmin=-80.0, vmax=0.0, colormap="no-such-map", palette=True)
