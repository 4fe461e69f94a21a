"""The import contracts of pyproject.toml ([tool.importlinter]), checked by import-linter on the real import graph.

``make lint`` runs ``lint-imports`` too; this test also proves that the tool sees the graph (a
contract that the code breaks is reported broken), so that "kept" means something.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINT_IMPORTS = shutil.which("lint-imports", path=str(pathlib.Path(sys.executable).parent)) or "lint-imports"


def _lint(config: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINT_IMPORTS, "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)


def test_the_import_contracts_are_kept() -> None:
    done = _lint(ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    names = ("The library imports neither the export nor the Beam jobs",
             "The Beam jobs call SavedModels: they import no model classes and no training",
             "What a Beam launcher needs never imports TensorFlow")
    for name in names:
        assert f"{name} KEPT" in done.stdout, done.stdout[-4000:]


def test_a_broken_contract_is_reported(tmp_path: pathlib.Path) -> None:
    """The tool follows imports inside functions and through other modules (tag -> ... -> numpy)."""
    config = tmp_path / "contracts.toml"
    config.write_text("""
[tool.importlinter]
root_packages = ["tfaural", "export", "beam_jobs"]
include_external_packages = true

[[tool.importlinter.contracts]]
name = "The tag launcher never imports NumPy (false: a check that the graph is seen)"
type = "forbidden"
source_modules = ["beam_jobs.tag"]
forbidden_modules = ["numpy"]
""")
    done = _lint(config)
    assert done.returncode == 1, done.stdout[-4000:]
    assert "The tag launcher never imports NumPy (false: a check that the graph is seen) BROKEN" in done.stdout
    assert "beam_jobs.tag -> numpy" in done.stdout
