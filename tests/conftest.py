"""Shared pytest fixtures: seeded RNG and synthetic test signals written to real files."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib
from collections.abc import Callable

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed, fresh for every test."""
    return np.random.default_rng(20151007)


@pytest.fixture
def write_audio(tmp_path: pathlib.Path) -> Callable[..., pathlib.Path]:
    """Writes ``y`` (``[samples]`` or ``[channels, samples]``) to ``tmp_path/name`` with soundfile."""

    def _write(name: str, y: np.ndarray, *, sample_rate: int, subtype: str | None = None) -> pathlib.Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = y if y.ndim == 1 else y.T
        sf.write(path, data, sample_rate, subtype=subtype)
        return path

    return _write
