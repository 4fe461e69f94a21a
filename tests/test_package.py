"""The package imports cleanly and exposes one version."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys
import zipfile

import tfaural
from tfaural import errors

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_import_all_top_level_packages_in_a_fresh_process() -> None:
    code = "import tfaural, export, beam_jobs; print(tfaural.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == tfaural.__version__


def test_the_installed_frameworks_come_with_their_bytecode() -> None:
    """``make install`` compiles the packages' bytecode as it installs them (pip does; uv is asked to): a process
    that may not write it (``PYTHONDONTWRITEBYTECODE``, as many containers and this project's CI set, or a
    read-only venv) would otherwise compile TensorFlow's, Keras's and Beam's modules from source at every start
    of every job, worker and model process. Every module of theirs has its cached bytecode, whether imported yet
    or not."""
    for package in ("tensorflow", "keras", "apache_beam"):
        spec = importlib.util.find_spec(package)  # a top-level package: found, not imported
        assert spec is not None and spec.submodule_search_locations, package
        root = pathlib.Path(next(iter(spec.submodule_search_locations)))
        sources = list(root.rglob("*.py"))
        missing = [str(path.relative_to(root)) for path in sources
                   if not pathlib.Path(importlib.util.cache_from_source(str(path))).exists()]
        assert len(sources) > 300 and not missing, (package, len(missing), missing[:5])


def test_error_hierarchy() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.TfauralError)
    assert issubclass(errors.ParameterError, ValueError)  # callers catching ValueError still work


def test_the_wheel_holds_every_module_and_the_reports_templates(tmp_path: pathlib.Path) -> None:
    """``pip install .`` (not editable, as on a Beam worker) gets the code and the report's data files.

    The templates and assets are folders without Python: setup.py lists them as packages of their
    own, and the build no longer warns that they "would be ignored".
    """
    source = tmp_path / "source"  # a copy: setuptools builds in the source tree (build/, *.egg-info)
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("tfaural", "export", "beam_jobs"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path), str(source)], capture_output=True, text=True, check=True)
    assert "would be ignored" not in out.stdout + out.stderr
    (wheel,) = tmp_path.glob("tfaural-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(REPO)) for folder in ("tfaural", "export", "beam_jobs")
                for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".html", ".css", ".js")
                and "__pycache__" not in p.parts}
    assert {n for n in expected if "/report/" in n and not n.endswith(".py")} >= {
        "tfaural/report/templates/index.html", "tfaural/report/assets/style.css", "tfaural/report/assets/report.js"}
    assert expected <= names, sorted(expected - names)
