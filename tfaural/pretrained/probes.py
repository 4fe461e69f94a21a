"""Music-like probe signals made in NumPy (no soundfont needed): chords with harmonics plus drums.

Used to check an imported model against its publisher's graph at import time and in
the tests. Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

from tfaural.errors import ParameterError

__all__ = ["music_like"]

#: A I-vi-IV-V progression in semitones above the key's root (major and minor triads).
_PROGRESSION = ((0, 4, 7), (9, 12, 16), (5, 9, 12), (7, 11, 14))


def _tone(freq: float, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A plucked harmonic tone: 8 partials with 1/k amplitudes, exponential decay."""
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    for k in range(1, 9):
        if k * freq >= sample_rate / 2:
            break
        out += np.sin(2 * np.pi * k * freq * t + rng.uniform(0, 2 * np.pi)) / k
    return out * np.exp(-t * 2.5) * np.minimum(1.0, t / 0.005)


def _drums(n: int, sample_rate: int, beat: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    kick_len, snare_len, hat_len = int(0.25 * sample_rate), int(0.15 * sample_rate), int(0.04 * sample_rate)
    tk = np.arange(kick_len) / sample_rate
    kick = np.sin(2 * np.pi * (50 * tk + 60 * (1 - np.exp(-tk * 30)) / 30 * 30)) * np.exp(-tk * 12)
    snare = rng.standard_normal(snare_len) * np.exp(-np.arange(snare_len) / sample_rate * 25)
    hat = np.diff(rng.standard_normal(hat_len + 1)) * np.exp(-np.arange(hat_len) / sample_rate * 80)
    for index, start in enumerate(range(0, n, beat // 2)):
        pieces = [(hat, 0.25)]
        if index % 4 == 0:
            pieces.append((kick, 1.0))
        if index % 4 == 2:
            pieces.append((snare, 0.5))
        for piece, gain in pieces:
            stop = min(n, start + piece.size)
            out[start:stop] += gain * piece[: stop - start]
    return out


def music_like(*, seconds: float, sample_rate: int, seed: int = 0, peak: float = 0.25,
               tempo: float = 120.0) -> np.ndarray:
    """Chords (one per bar, I-vi-IV-V in a random key) over a kick/snare/hi-hat pattern.

    Args:
        seconds: Duration in seconds.
        sample_rate: Sample rate in Hz (keyword-only).
        seed: Random seed (key, phases, noise).
        peak: Peak amplitude of the result (0 < peak <= 1).
        tempo: Beats per minute.

    Returns:
        float32 ``[round(seconds * sample_rate)]`` with ``max |y| == peak``.
    """
    if not (seconds > 0 and isinstance(sample_rate, int) and sample_rate > 0 and 0 < peak <= 1):
        raise ParameterError(f"music_like(seconds={seconds!r}, sample_rate={sample_rate!r}, peak={peak!r}): expected "
                             "positive seconds, a positive integer rate and 0 < peak <= 1")
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    beat = int(round(60.0 / tempo * sample_rate))
    root = 48 + int(rng.integers(0, 12))
    y = np.zeros(n)
    for bar, start in enumerate(range(0, n, 4 * beat)):
        length = min(4 * beat, n - start)
        for interval in _PROGRESSION[bar % len(_PROGRESSION)]:
            freq = 440.0 * 2 ** ((root + interval - 69) / 12)
            y[start:start + length] += _tone(freq, length, sample_rate, rng)
        bass = 440.0 * 2 ** ((root - 12 + _PROGRESSION[bar % len(_PROGRESSION)][0] - 69) / 12)
        y[start:start + length] += 1.5 * _tone(bass, length, sample_rate, rng)
    y = y / max(np.max(np.abs(y)), 1e-12) + 0.8 * _drums(n, sample_rate, beat, rng) / 1.5
    return (y * (peak / max(np.max(np.abs(y)), 1e-12))).astype(np.float32)
