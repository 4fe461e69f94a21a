#!/usr/bin/env python3
"""Does an export made with this TensorFlow load and run in older runtimes (TF Serving trails TensorFlow)?

``python scripts/check_tf_compat.py EXPORT_DIR [EXPORT_DIR ...] [--versions 2.18 2.19 2.20]
[--venv-dir DIR] [--output matrix.json]``

For every TensorFlow version the script keeps a virtualenv under ``--venv-dir`` (created on the
first run with ``python -m venv`` and ``pip install tensorflow==<version>.*`` from the package index;
later runs reuse it, so a rerun takes a minute, not the ~1.5 GB of wheels). Nothing of tfaural is
installed there. In each environment it runs, for each export, the export's own verification
script (``export/verify.py --child``: stdlib, numpy and TensorFlow only) in an isolated interpreter
(``python -I``, which ignores ``PYTHONPATH`` and the user site) that

* lists every op of the graph and its function library and checks that this TensorFlow registers
  it (an op added in a newer release is reported by name),
* loads the SavedModel with ``tf.saved_model.load``,
* calls every signature on the warm-up inputs stored in the export
  (``assets.extra/tfaural_reference.npz``: batch 1, one segment, the deepest layer, features
  ``[0, 1]``, mode ``phase``) and compares the outputs with those of the Keras model that was
  exported (``|got - ref| <= 1e-5 |ref| + 1e-5 max|ref|``; strings and booleans exactly).

It prints one JSON object: ``matrix[export][tensorflow version][signature]`` is ``"ok"`` or
``"error: ..."`` (the call failed, with TensorFlow's message) or ``"mismatch: ..."`` (it ran but the
outputs differ), plus per-cell details, the exact TensorFlow version installed and any environment
or load failure (``"environment"``/``"load"`` entries instead of signatures). Exit status: 0 if every
cell is ok, 1 otherwise, 2 on bad arguments.

This is not part of the test suite (it downloads TensorFlow three times); run it when the
exporter or TensorFlow changes and record the matrix in ``docs/serving.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VERIFY_SCRIPT = REPO / "export" / "verify.py"
DEFAULT_VERSIONS = ("2.18", "2.19", "2.20")
DEFAULT_VENV_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tfaural" / "tf-compat"
READY_FILE = "tfaural-compat-ready.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python scripts/check_tf_compat.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("exports", nargs="+", metavar="EXPORT_DIR",
                        help="export version directories (EXPORT_BASE/<N>) made by python -m export")
    parser.add_argument("--versions", nargs="+", default=list(DEFAULT_VERSIONS), metavar="X.Y",
                        help="TensorFlow minor versions to try (the newest patch release of each is installed; "
                             "default: %(default)s)")
    parser.add_argument("--venv-dir", type=Path, default=DEFAULT_VENV_DIR,
                        help="where the virtualenvs are kept between runs (default: %(default)s)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter the virtualenvs are made from (default: this one); its version must "
                             "have TensorFlow wheels for every --versions entry")
    parser.add_argument("--recreate", action="store_true", help="delete and rebuild the virtualenvs")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds allowed for each pip install and each export check (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    for export_dir in args.exports:
        path = Path(export_dir)
        if not (path / "saved_model.pb").is_file():
            parser.error(f"{export_dir} is not a SavedModel version directory (no saved_model.pb)")
        if not (path / "assets.extra" / "tfaural_reference.npz").is_file():
            parser.error(f"{export_dir} has no assets.extra/tfaural_reference.npz: export it with python -m export")
    import shutil

    if not (os.path.isfile(args.python) or shutil.which(args.python)):
        parser.error(f"--python {args.python!r} is not an interpreter on this machine")
    for version in args.versions:
        parts = version.split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            parser.error(f"--versions {version!r} is invalid: expected MAJOR.MINOR such as 2.18")
    return args


def _run(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _tail(text: str, n: int = 1500) -> str:
    return text.strip()[-n:]


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def ensure_venv(version: str, *, root: Path, python: str, recreate: bool, timeout: float) -> dict[str, Any]:
    """Creates (or reuses) the virtualenv with TensorFlow ``version``; returns its description.

    Returns:
        ``{"venv", "python", "tensorflow", "numpy", "seconds", "reused"}``, or ``{"error": ...}``.
    """
    import shutil

    start = time.perf_counter()
    try:
        probe = _run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"error": f"cannot run {python}: {err}"}
    py_version = probe.stdout.strip()
    if probe.returncode or not py_version:
        return {"error": f"cannot run {python}: {_tail(probe.stderr)}"}
    venv = root / f"tf-{version}-py{py_version}"
    ready = venv / READY_FILE
    if recreate and venv.exists():
        shutil.rmtree(venv)
    if ready.is_file() and _venv_python(venv).is_file():
        info = json.loads(ready.read_text())
        return {**info, "seconds": round(time.perf_counter() - start, 1), "reused": True}
    if venv.exists():  # a half-built environment from an interrupted run
        shutil.rmtree(venv)
    root.mkdir(parents=True, exist_ok=True)
    made = _run([python, "-m", "venv", str(venv)], timeout=300)
    if made.returncode:
        return {"venv": str(venv), "error": f"python -m venv failed: {_tail(made.stderr)}"}
    pip = [str(_venv_python(venv)), "-m", "pip"]
    steps = [
        [*pip, "install", "--quiet", "--upgrade", "pip"],
        [*pip, "install", "--quiet", "--only-binary=:all:", f"tensorflow=={version}.*"],
    ]
    for step in steps:
        try:
            done = _run(step, timeout=timeout, env=_clean_env())
        except subprocess.TimeoutExpired:
            return {"venv": str(venv), "error": f"{' '.join(step[2:])} timed out after {timeout:.0f} s"}
        if done.returncode:
            return {"venv": str(venv), "error": f"{' '.join(step[2:])} failed: {_tail(done.stderr or done.stdout)}"}
    probe = _run([str(_venv_python(venv)), "-I", "-c",
                  "import json, numpy, tensorflow as tf; "
                  "print(json.dumps({'tensorflow': tf.__version__, 'numpy': numpy.__version__}))"],
                 timeout=600, env=_clean_env())
    lines = [line for line in probe.stdout.splitlines() if line.startswith("{")]
    if probe.returncode or not lines:
        return {"venv": str(venv), "error": f"importing TensorFlow failed: {_tail(probe.stderr)}"}
    versions = json.loads(lines[-1])
    if not versions["tensorflow"].startswith(version + "."):
        return {"venv": str(venv), "error": f"pip installed TensorFlow {versions['tensorflow']}, not {version}.x"}
    info = {"venv": str(venv), "python": py_version, **versions}
    ready.write_text(json.dumps(info))
    return {**info, "seconds": round(time.perf_counter() - start, 1), "reused": False}


def check_export(venv_python: Path, export_dir: Path, *, timeout: float) -> dict[str, Any]:
    """Runs the export's verification child in the virtualenv; returns its report (or an error)."""
    reference = export_dir / "assets.extra" / "tfaural_reference.npz"
    command = [str(venv_python), "-I", str(VERIFY_SCRIPT), "--child", str(export_dir), str(reference)]
    try:
        done = _run(command, timeout=timeout, env=_clean_env())
    except subprocess.TimeoutExpired:
        return {"error": f"the check timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"error": f"exit {done.returncode}: {_tail(done.stderr or done.stdout)}"}
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _difference(check: dict[str, Any]) -> str:
    if check.get("problem"):
        return str(check["problem"])
    return f"max abs error {check['max_abs_error']:.3g} at scale {check['scale']:.3g}"


def cells(report: dict[str, Any]) -> dict[str, str]:
    """``{signature: "ok" | "error: ..." | "mismatch: ..."}`` from a verification child's report."""
    if "error" in report:
        return {"load": f"error: {report['error']}"}
    out: dict[str, str] = {}
    problems = report.get("ops", {}).get("problems") or []
    if problems:
        out["ops"] = "error: " + "; ".join(problems)
    if report.get("tfaural_importable"):
        out["isolation"] = "error: tfaural was importable in the virtualenv"
    for signature, result in sorted(report.get("signatures", {}).items()):
        if result.get("ok"):
            out[signature] = "ok"
        elif "outputs" not in result:
            out[signature] = f"error: {result.get('problem', 'failed')}"
        else:
            bad = [f"{name}: {_difference(check)}" for name, check in result["outputs"].items() if not check.get("ok")]
            out[signature] = "mismatch: " + "; ".join(bad + ([result["problem"]] if result.get("problem") else []))
    if not report.get("signatures"):
        out["signatures"] = "error: no signature was called"
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exports = [Path(e).resolve() for e in args.exports]
    environments: dict[str, Any] = {}
    matrix: dict[str, dict[str, dict[str, str]]] = {str(e): {} for e in exports}
    details: dict[str, dict[str, Any]] = {str(e): {} for e in exports}
    metadata = {}
    for export_dir in exports:
        meta_path = export_dir / "assets" / "metadata.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        metadata[str(export_dir)] = {k: meta.get(k) for k in ("family", "tensorflow_version", "sample_rate")}
    for version in args.versions:
        print(f"[compat] TensorFlow {version}: preparing the virtualenv ...", file=sys.stderr, flush=True)
        env = ensure_venv(version, root=args.venv_dir, python=args.python, recreate=args.recreate,
                          timeout=args.timeout)
        environments[version] = env
        for export_dir in exports:
            if "error" in env:
                matrix[str(export_dir)][version] = {"environment": f"error: {env['error']}"}
                continue
            print(f"[compat] TensorFlow {env['tensorflow']}: {export_dir}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            report = check_export(_venv_python(Path(env["venv"])), export_dir, timeout=args.timeout)
            matrix[str(export_dir)][version] = cells(report)
            details[str(export_dir)][version] = {
                "tensorflow": report.get("tensorflow", env.get("tensorflow")),
                "seconds": round(time.perf_counter() - start, 1),
                "op_types": report.get("ops", {}).get("types"),
                "report": report,
            }
    ok = all(cell == "ok" for per_export in matrix.values() for row in per_export.values() for cell in row.values())
    result = {"ok": ok, "matrix": matrix, "exports": metadata, "environments": environments, "details": details}
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
