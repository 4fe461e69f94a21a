"""Test signals generated in code (the tests commit no audio): sines with fades, chirps, clicks; and the lag of a
decoded copy."""

from __future__ import annotations

import numpy as np
import scipy.signal


def sine(freq: float, seconds: float, *, sample_rate: int, amplitude: float = 0.5, fade: float = 0.01) -> np.ndarray:
    """A sine with short linear fades: float32 ``[samples]``."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    y = amplitude * np.sin(2 * np.pi * freq * t)
    n_fade = min(int(fade * sample_rate), len(y) // 2)
    if n_fade:
        ramp = np.linspace(0.0, 1.0, n_fade)
        y[:n_fade] *= ramp
        y[-n_fade:] *= ramp[::-1]
    return y.astype(np.float32)


def chirp(f0: float, f1: float, seconds: float, *, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    """A linear chirp from ``f0`` to ``f1`` Hz: float32 ``[samples]``."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (amplitude * np.sin(phase)).astype(np.float32)


def clicks(seconds: float, *, sample_rate: int, every: float = 0.25, amplitude: float = 0.8) -> np.ndarray:
    """Unit impulses every ``every`` seconds: float32 ``[samples]``."""
    y = np.zeros(int(round(seconds * sample_rate)), np.float32)
    y[:: max(1, int(every * sample_rate))] = amplitude
    return y


def lag(decoded: np.ndarray, source: np.ndarray, *, channel: int = 1, search: int = 2500) -> int:
    """Samples by which ``decoded`` lags ``source`` (``[channels, samples]`` each), by the peak of the
    cross-correlation of ``channel`` (a chirp's is sharp) within ``±search``."""
    n = min(decoded.shape[-1], source.shape[-1]) - 2 * search
    a, b = decoded[channel].astype(np.float64), source[channel].astype(np.float64)
    # scores[k] = a[k:k + n] . b[search:search + n], the shift k - search: by FFT, not 2 * search + 1 dot products
    # of n samples each (for a few seconds at 352.8 kHz, tens of GB of memory traffic).
    scores = scipy.signal.correlate(a[:n + 2 * search], b[search:search + n], mode="valid", method="fft")
    return int(np.argmax(scores)) - search
