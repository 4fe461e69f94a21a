"""TensorFlow's thread count in a Dask worker follows the worker's own thread count."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dask.distributed import Client, LocalCluster

from beam_jobs.inference import _dask_worker_threads


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None) as cluster,
          Client(cluster) as dask_client):
        yield dask_client


def test_a_dask_worker_gives_tensorflow_its_thread_count(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)  # set in the environment, it wins (test below)
    assert client.submit(_dask_worker_threads, pure=False).result() == 3


def test_outside_dask_tensorflow_keeps_its_default() -> None:
    assert _dask_worker_threads() is None


def test_the_environment_wins(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")  # the in-process worker shares this environment
    assert client.submit(_dask_worker_threads, pure=False).result() is None
