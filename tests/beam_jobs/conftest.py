"""Fixtures of the Beam job tests: one tiny export per model family per test session."""

from __future__ import annotations

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
