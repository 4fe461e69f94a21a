"""Fixtures of the Beam job tests: one tiny export per model family per test session; a local GCS server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from jobs_testing import tiny_export


@pytest.fixture(scope="session")
def choi_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Choi CNN export (2048 Hz, 5 layers of 4 feature maps, segments of 992 samples)."""
    return tiny_export("choi", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def samplecnn_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 3^5-SampleCNN export (2000 Hz, segments of 243 samples, 4 labels)."""
    return tiny_export("samplecnn", str(tmp_path_factory.getbasetemp()))


@pytest.fixture()
def gcs_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``gs://tfaural-test``: a bucket of a local GCS server (gcp-storage-emulator, in memory), which Beam's
    ``gs://`` filesystem reaches through ``STORAGE_EMULATOR_HOST``, anonymously."""
    import socket

    from apache_beam.internal.gcp import auth
    from gcp_storage_emulator.server import create_server

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    server = create_server("localhost", port, in_memory=True, default_bucket="tfaural-test")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://localhost:{port}")
    # Beam looks for Google credentials once per process, retrying for ~25 s when there are none: say "none" now.
    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)
    try:
        yield "gs://tfaural-test"
    finally:
        server.stop()
