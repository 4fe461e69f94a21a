"""The one spectrogram renderer: waveform → dB image → PNG, in NumPy (never TensorFlow).

``beam_jobs.auralise --spectrograms`` draws its PNGs with it, and the listening report
(:mod:`tfaural.report.thumbnails`) draws the thumbnails the job did not write with it, so a
spectrogram looks the same wherever it is shown. Neither needs TensorFlow for a picture.

The frames follow :mod:`tfaural.spectral`'s convention: centred (``n_fft // 2`` samples of padding
on both sides), periodic Hann window, one-sided ``n_fft // 2 + 1`` bins. One difference, kept
because the job's pictures must not change: the signal's edges are padded by reflection
(zeros when the signal is not longer than the padding), where :func:`tfaural.spectral.stft`
pads with zeros; only the first and last ``n_fft // (2 * hop_length)`` frames differ.

Images are ``[freq, frames]`` arrays with row 0 the lowest frequency; a PNG shows them with low
frequencies at the bottom, coloured by a matplotlib colour map between ``vmin`` and ``vmax``.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np

from tfaural.errors import ParameterError

__all__ = [
    "MAGNITUDE_FLOOR",
    "stft_magnitude",
    "spectrogram_db",
    "full_scale_db",
    "resize_power",
    "colour_indices",
    "render_spectrogram",
]

MAGNITUDE_FLOOR = 1e-10
"""Magnitudes below this are drawn as this (-200 dB), so silence is finite."""


def _check_stft(n_fft: int, hop_length: int) -> None:
    if n_fft < 2 or hop_length < 1:
        raise ParameterError(f"n_fft={n_fft}, hop_length={hop_length}: expected n_fft >= 2 and hop_length >= 1")


def stft_magnitude(y: np.ndarray, *, n_fft: int, hop_length: int) -> np.ndarray:
    """STFT magnitude of one waveform: centred frames, periodic Hann window (see the module docstring).

    Args:
        y: float32 ``[samples]`` in [-1, 1].
        n_fft: FFT size in samples.
        hop_length: Hop in samples.

    Returns:
        ``[n_fft // 2 + 1, frames]`` magnitudes (float32 for float32 input), frames
        ``1 + samples // hop_length`` (at least one).

    Raises:
        ParameterError: If ``n_fft < 2`` or ``hop_length < 1``.
    """
    _check_stft(n_fft, hop_length)
    y = np.asarray(y, np.float32)
    pad = n_fft // 2
    padded = np.pad(y, pad, mode="reflect" if len(y) > pad else "constant")
    if len(padded) < n_fft:
        padded = np.pad(padded, (0, n_fft - len(padded)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    return np.abs(np.fft.rfft(frames * window, axis=-1)).T


def spectrogram_db(y: np.ndarray, *, n_fft: int, hop_length: int) -> np.ndarray:
    """Magnitude spectrogram in dB (re 1.0), centred frames, periodic Hann window.

    Args:
        y: float32 ``[samples]`` in [-1, 1].
        n_fft: FFT size in samples.
        hop_length: Hop in samples.

    Returns:
        float32 ``[n_fft // 2 + 1, frames]``; silence is -200 dB, never NaN or -inf.
    """
    magnitude = stft_magnitude(y, n_fft=n_fft, hop_length=hop_length).astype(np.float64)
    return (20.0 * np.log10(np.maximum(magnitude, MAGNITUDE_FLOOR))).astype(np.float32)


def full_scale_db(n_fft: int) -> float:
    """The level in dB (re 1.0) of the loudest bin of a full-scale sine: subtract it to get dBFS.

    With the periodic Hann window a sine of amplitude 1 centred on a bin has magnitude ``n_fft / 4``
    there.
    """
    return 20.0 * math.log10(n_fft / 4.0)


@functools.lru_cache(maxsize=32)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]``: how much of each input cell each output cell covers, rows summing to 1."""
    edges = np.linspace(0.0, float(n_in), n_out + 1)
    cells = np.arange(n_in + 1, dtype=np.float64)
    overlap = np.minimum(edges[1:, None], cells[None, 1:]) - np.maximum(edges[:-1, None], cells[None, :-1])
    weights = np.clip(overlap, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    return weights


def resize_power(power: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """Resamples a power spectrogram to ``height`` x ``width`` by area averaging.

    Every output pixel is the mean power of the input cells it covers, weighted by how much of
    each it covers: shrinking averages neighbouring bins/frames, stretching repeats them (a
    4-s excerpt of 173 frames x 257 bins fills a landscape box instead of standing in it). A size
    that already matches is returned unchanged.

    Args:
        power: ``[freq, frames]`` non-negative power (any float dtype).
        height: Rows of the result (>= 1).
        width: Columns of the result (>= 1).

    Returns:
        float64 ``[height, width]``.
    """
    if height < 1 or width < 1:
        raise ParameterError(f"height={height}, width={width}: expected at least one pixel each way")
    power = np.asarray(power, np.float64)
    rows, columns = power.shape
    if rows != height:
        power = _area_weights(rows, height) @ power
    if columns != width:
        power = power @ _area_weights(columns, width).T
    return power


def colour_indices(db: np.ndarray, *, vmin: float, vmax: float) -> np.ndarray:
    """The colour-map entry (0-255) of every pixel, as ``matplotlib.pyplot.imsave`` picks it.

    Args:
        db: ``[rows, columns]`` levels in dB.
        vmin: Level drawn with the first colour (and everything below it).
        vmax: Level drawn with the last colour (and everything above it).

    Returns:
        uint8 ``[rows, columns]``.
    """
    if not vmax > vmin:
        raise ParameterError(f"vmin={vmin}, vmax={vmax}: expected vmin < vmax")
    scaled = (np.asarray(db, np.float64) - vmin) / (vmax - vmin) * 256.0
    return np.clip(np.floor(scaled), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _palette(colormap: str) -> bytes:
    """The 256 RGB entries of a matplotlib colour map, as a PNG palette."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[colormap].resampled(256)
    except KeyError:
        raise ParameterError(f"colormap={colormap!r} is not a matplotlib colour map") from None
    rgb = np.asarray(cmap(np.arange(256), bytes=True))[:, :3].astype(np.uint8)  # as matplotlib quantises
    return rgb.tobytes()


def render_spectrogram(db: np.ndarray, *, vmin: float, vmax: float, colormap: str = "magma",
                       palette: bool = False) -> bytes:
    """A dB spectrogram as a PNG: one pixel per row/column, low frequencies at the bottom.

    Args:
        db: ``[freq, frames]`` levels in dB, row 0 the lowest frequency.
        vmin: Bottom of the colour scale in dB.
        vmax: Top of the colour scale in dB.
        colormap: A matplotlib colour map.
        palette: Write an 8-bit palette PNG (the colour map's 256 entries, about a quarter
            of the size) instead of ``matplotlib.pyplot.imsave``'s RGBA file. The pixels'
            colours are the same.

    Returns:
        The PNG file's bytes.
    """
    if palette:
        from PIL import Image

        picture = Image.fromarray(np.ascontiguousarray(colour_indices(db, vmin=vmin, vmax=vmax)[::-1]))  # "L" ...
        picture.putpalette(_palette(colormap))  # ... becomes "P": the indices are kept as they are
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    plt.imsave(buffer, db[::-1], cmap=colormap, vmin=vmin, vmax=vmax, format="png")
    return buffer.getvalue()
