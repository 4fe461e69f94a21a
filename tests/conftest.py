"""Shared pytest fixtures: seeded RNG and synthetic test signals written to real files."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib
from collections.abc import Callable

import numpy as np
import pytest
import soundfile as sf

from beam_jobs.tf_runtime import THREAD_VARIABLES
from tfaural.cpu import prefer_onednn


def _share_the_cores_between_workers() -> None:
    """TensorFlow threads of each pytest-xdist worker (and of every process its tests start): its share of the cores.

    TensorFlow's default is an intra- and an inter-op thread per core in every process, so ``make test``'s two
    workers on a 2-core machine ran four of each (more with the processes a test starts), and threads that wait
    for a descheduled sibling leave cores idle. Dask's rule, as :func:`beam_jobs.inference._dask_worker_threads`
    applies it. Variables already set win; tests of thread counts and the benchmarks' smoke run (as from a
    user's shell) drop or set their own.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 0:
        share = str(max(1, (os.cpu_count() or 1) // workers))
        for name in THREAD_VARIABLES:
            os.environ.setdefault(name, share)


_share_the_cores_between_workers()

# The tests run the kernels tfaural's command lines run (oneDNN's where tfaural measured them faster than
# TensorFlow's default, tfaural.cpu), so that a job's outputs and the library's in the test agree.
prefer_onednn()


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Runs the long end-to-end modules first, so that ``make test``'s two workers finish together.

    ``make test`` runs ``pytest -n 2 --dist loadfile --no-loadscope-reorder``: each module goes whole
    to one worker (its module-scoped exports are built once), handed out in this order as workers
    free up. Modules marked slow as a whole (``pytestmark = pytest.mark.slow``: minutes each) go
    first, then those with some slow tests, then the rest; the short ones fill in around the long
    ones instead of one worker finishing minutes after the other. Within a group the collection
    order stands (a stable sort); a plain ``pytest`` run uses the same order.
    """
    slow: dict[str, list[bool]] = {}
    for item in items:
        slow.setdefault(item.nodeid.split("::")[0], []).append(item.get_closest_marker("slow") is not None)
    rank = {module: 0 if all(marks) else 1 if any(marks) else 2 for module, marks in slow.items()}
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])
