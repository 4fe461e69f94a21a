"""The package imports cleanly and exposes one version."""

from __future__ import annotations

import subprocess
import sys

import tfaural
from tfaural import errors


def test_import_all_top_level_packages_in_a_fresh_process() -> None:
    code = "import tfaural, export, beam_jobs; print(tfaural.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == tfaural.__version__


def test_error_hierarchy() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.TfauralError)
    assert issubclass(errors.ParameterError, ValueError)  # callers catching ValueError still work
