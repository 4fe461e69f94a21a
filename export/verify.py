"""Verification of an export, as TF Serving and the Beam jobs will see it.

``python -m export.verify EXPORT_DIR [--run RUN_DIR]`` (also run at the end of
every export, before the version directory is published) checks that:

1. **Only core TensorFlow ops** are in the graph and its function library: no
   ``PyFunc``/``PyFuncStateless``/``EagerPyFunc`` (TF Serving cannot run Python) and
   every op is registered in a fresh TensorFlow-only process (no custom ops).
2. **It runs without tfaural.** A fresh Python process (``python -I``, with a
   ``sys.meta_path`` finder that refuses to import ``tfaural``, ``export`` and
   ``beam_jobs``, and which proves it by failing to ``import tfaural``; Keras is hidden
   while it imports TensorFlow, as if not installed) loads the SavedModel with
   ``tf.saved_model.load``, calls every signature on the warm-up inputs and compares
   with the reference outputs of the Keras model computed in-process: elementwise
   ``|got - ref| <= 1e-5 * |ref| + 1e-5 * max|ref|`` (a relative tolerance, with an
   absolute floor of 1e-5 of the output's own scale so that near-zero entries of
   large-range outputs such as deconvolutions are judged on that scale; for
   ``auralise``'s audio, a floor of one 16-bit step, ``AUDIO_ATOL``); strings and
   booleans must be equal. It does the same
   with the SavedModel loaded the way TF Serving's C++ loader loads it (the MetaGraph
   in a TF1 session, the variables restored by its saver: this is what catches
   variables that only ``tf.saved_model.load`` can find; Grappler's graph rewrites,
   which the calls above run on every function, are off there, as they would only
   re-optimise the whole graph per signature), and with each one-signature
   SavedModel the jobs load (``metadata.json``: ``signature_savedmodels``). The TF1
   session runs in a second fresh process beside the first (:data:`CHILD_PARTS`).
3. **``saved_model_cli show --all``** lists every signature of ``metadata.json``
   with the documented input and output names and dtypes (the command's own ``main``,
   run in the session's process before its calls: a process of its own would import
   TensorFlow a third time for a listing that takes a fraction of that).

The two processes start before the export is written (:class:`Processes`): each
imports TensorFlow while the exporter traces the signatures, and waits for the
export's path on its standard input.

The reference outputs are stored in the export (``assets.extra/tfaural_reference.npz``,
written by the exporter from the Keras model); ``--run RUN_DIR`` recomputes them
from the run's Keras model instead.

This file is also the script the fresh processes run (``--wait``; ``--child`` for one run), so its
module-level imports are the standard library and numpy only.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.abc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "REFERENCE_FILE",
    "FORBIDDEN_OPS",
    "BLOCKED_PACKAGES",
    "RTOL",
    "ATOL_OF_SCALE",
    "graph_ops",
    "op_problems",
    "check_ops",
    "compare",
    "save_reference",
    "load_reference",
    "saved_model_cli_signatures",
    "verify_export",
    "CHILD_PARTS",
    "Processes",
    "main",
]

#: Reference inputs and outputs inside an export version directory.
REFERENCE_FILE = os.path.join("assets.extra", "tfaural_reference.npz")
FORBIDDEN_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
BLOCKED_PACKAGES = ("tfaural", "export", "beam_jobs")
RTOL = 1e-5
ATOL_OF_SCALE = 1e-5
#: The absolute floor of ``auralise``'s ``audio``: one step of 16-bit audio (the jobs write 16-bit WAVs). Turning a
#: deconvolved map back into power exponentiates it (``10^(rise / 10)`` over 80 dB for a dB front end), so float32
#: round-off of a different runtime (a TF1 session) grows to about 2e-5 of the peak there.
AUDIO_ATOL = 2.0**-15


def _export_error(message: str) -> Exception:
    from tfaural.errors import ExportError  # deferred: this module also runs without tfaural

    return ExportError(message)


# --------------------------------------------------------------------------- ops


def graph_ops(export_dir: str) -> tuple[dict[str, int], set[str]]:
    """Op types used by a SavedModel's graph and function library.

    Args:
        export_dir: A SavedModel directory.

    Returns:
        ``({op type: node count}, {names of library functions})``. A node may call a
        library function by name; such names are not op types.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    counts: collections.Counter[str] = collections.Counter()
    functions: set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        counts.update(node.op for node in graph.node)
        for function in graph.library.function:
            functions.add(function.signature.name)
            counts.update(node.op for node in function.node_def)
    return dict(counts), functions


def op_problems(ops: Mapping[str, int], functions: set[str]) -> list[str]:
    """Forbidden or unregistered op types (call in a process where only TensorFlow is loaded)."""
    from tensorflow.python.framework import op_def_registry

    problems = [f"forbidden op {op} ({ops[op]} nodes): TF Serving cannot run Python" for op in FORBIDDEN_OPS & set(ops)]
    problems += [
        f"op {op} is not registered in core TensorFlow"
        for op in sorted(ops) if op not in functions and op_def_registry.get(op) is None
    ]
    return problems


def check_ops(export_dir: str) -> dict[str, int]:
    """Checks the ops of an export in this process (see :func:`op_problems`).

    Returns:
        ``{op type: node count}``.

    Raises:
        ExportError: If a forbidden or unregistered op is used.
    """
    ops, functions = graph_ops(export_dir)
    problems = op_problems(ops, functions)
    if problems:
        raise _export_error(f"{export_dir}: " + "; ".join(problems))
    return ops


# --------------------------------------------------------------------------- reference data


def save_reference(path: str, data: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]) -> None:
    """Writes ``{signature: {"inputs": {...}, "outputs": {...}}}`` as an ``.npz`` (no pickles).

    String arrays (numpy object arrays of bytes) are stored as their concatenated
    bytes, element lengths and shape, so they round-trip exactly (NUL bytes included).
    """
    flat: dict[str, np.ndarray] = {}
    for signature, parts in data.items():
        for part, arrays in parts.items():
            for name, value in arrays.items():
                key = f"{signature}/{part}/{name}"
                array = np.asarray(value)
                if array.dtype == object or array.dtype.kind in "SU":
                    items = [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in array.reshape(-1)]
                    flat[key + "#bytes"] = np.frombuffer(b"".join(items), dtype=np.uint8)
                    flat[key + "#lengths"] = np.array([len(x) for x in items], dtype=np.int64)
                    flat[key + "#shape"] = np.array(array.shape, dtype=np.int64)
                else:
                    flat[key] = array
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, **flat)  # type: ignore[arg-type]


def load_reference(path: str) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Inverse of :func:`save_reference` (strings come back as object arrays of bytes)."""
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    with np.load(path, allow_pickle=False) as npz:
        keys = list(npz.keys())
        for key in keys:
            base, _, suffix = key.partition("#")
            if suffix not in ("", "bytes"):
                continue
            signature, part, name = base.split("/")
            if suffix == "bytes":
                buffer = npz[key].tobytes()
                lengths = npz[base + "#lengths"]
                shape = tuple(int(n) for n in npz[base + "#shape"])
                starts = np.concatenate([[0], np.cumsum(lengths)])
                items = [buffer[starts[i] : starts[i + 1]] for i in range(len(lengths))]
                value = np.empty(len(items), dtype=object)
                value[:] = items
                array = value.reshape(shape)
            else:
                array = npz[key]
            out.setdefault(signature, {}).setdefault(part, {})[name] = array
    return out


def compare(got: np.ndarray, ref: np.ndarray, *, atol: float = 0.0) -> dict[str, Any]:
    """Compares one output with its reference (tolerances in the module docstring; ``atol``: a larger absolute
    floor, :data:`AUDIO_ATOL` for ``auralise``'s ``audio``).

    Returns:
        ``{"ok", "shape", "max_abs_error", "max_rel_error", "scale"}`` (errors relative to ``scale = max|ref|``).
    """
    got, ref = np.asarray(got), np.asarray(ref)
    result: dict[str, Any] = {"shape": list(ref.shape)}
    if got.shape != ref.shape:
        return {**result, "ok": False, "problem": f"shape {list(got.shape)} != reference {list(ref.shape)}"}
    if ref.dtype == object or ref.dtype.kind in "SUb":
        equal = bool(np.array_equal(got, ref))
        return {**result, "ok": equal, **({} if equal else {"problem": "values differ"})}
    got64, ref64 = got.astype(np.float64), ref.astype(np.float64)
    if not np.all(np.isfinite(got64)):
        return {**result, "ok": False, "problem": "non-finite values"}
    diff = np.abs(got64 - ref64)
    scale = float(np.max(np.abs(ref64))) if ref64.size else 0.0
    ok = bool(np.all(diff <= RTOL * np.abs(ref64) + max(ATOL_OF_SCALE * scale, atol)))
    max_abs = float(diff.max()) if diff.size else 0.0
    return {**result, "ok": ok, "max_abs_error": max_abs, "max_rel_error": max_abs / scale if scale else 0.0,
            "scale": scale}


# --------------------------------------------------------------------------- the fresh process


class _BlockProjectPackages(importlib.abc.MetaPathFinder):
    """Refuses to import tfaural, export and beam_jobs (so the check proves they are not needed)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] in BLOCKED_PACKAGES:
            raise ImportError(f"{fullname} is blocked: an export must run with TensorFlow alone")
        return None


#: What a fresh process checks: ``loaded`` (ops, ``tf.saved_model.load`` and every signature, the one-signature
#: SavedModels) and ``session`` (the TF1 session). :func:`verify_export` runs them as two processes side by side:
#: loading and first calls are mostly single-threaded, so on two cores the check takes about the longer of the two.
CHILD_PARTS = ("loaded", "session")
#: The process of a verification (:class:`Processes`, one per :data:`CHILD_PARTS` part) that also runs
#: ``saved_model_cli show --all`` (the command's own ``main``).
CLI_HOST = "session"


def _child_start() -> dict[str, Any]:
    """The fresh process's start: refuse tfaural's packages, prove it, import TensorFlow (the report's first keys)."""
    sys.meta_path.insert(0, _BlockProjectPackages())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED_PACKAGES:
            del sys.modules[name]
    report: dict[str, Any] = {"python": sys.executable}
    try:
        import tfaural  # noqa: F401
    except ImportError:
        report["tfaural_importable"] = False
    else:
        report["tfaural_importable"] = True
    # Keras hidden while TensorFlow imports, as if it were not installed (TensorFlow then skips registering its
    # optimizers): an export holds no Keras objects, so this also shows that it needs no Keras, and it spares
    # each process importing Keras and scikit-learn (about 2.5 s of CPU on a 2-core AMD EPYC).
    hide_keras = "keras" not in sys.modules
    if hide_keras:
        sys.modules["keras"] = None  # type: ignore[assignment]
    try:
        import tensorflow as tf
    finally:
        if hide_keras:
            del sys.modules["keras"]

    report["tensorflow"] = tf.__version__
    return report


def _child(export_dir: str, reference_path: str, parts: Sequence[str] = CHILD_PARTS,
           report: dict[str, Any] | None = None) -> dict[str, Any]:
    """Runs in the fresh process: ops, load, call every signature, compare (the ``parts`` of :data:`CHILD_PARTS`).

    ``report`` is :func:`_child_start`'s, when the process started before the export existed (:class:`Processes`).
    """
    report = _child_start() if report is None else report
    import tensorflow as tf

    report["modules"] = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED_PACKAGES))
    reference = load_reference(reference_path)
    if "loaded" in parts:
        ops, functions = graph_ops(export_dir)
        report["ops"] = {"types": len(ops), "problems": op_problems(ops, functions)}
        loaded = tf.saved_model.load(export_dir)
        report["loaded_signatures"] = sorted(loaded.signatures.keys())

        def call_loaded(signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
            if signature not in loaded.signatures:
                return None
            tensors = {name: tf.constant(value) for name, value in inputs.items()}
            return {k: v.numpy() for k, v in loaded.signatures[signature](**tensors).items()}

        report["signatures"] = _check_calls(call_loaded, reference)
        report["signature_savedmodels"] = _check_signature_savedmodels(export_dir, reference)
    if "session" in parts:
        report["session_signatures"] = _check_calls(_session_caller(export_dir), reference)
    # Whether loading and calling the export brought Keras in (TensorFlow itself was imported without it).
    report["keras_imported"] = "keras" in sys.modules
    report["ok"] = _child_ok(report)
    return report


def _run_saved_model_cli(export_dir: str) -> dict[str, Any]:
    """``saved_model_cli show --dir EXPORT_DIR --all`` as the command runs it (its ``main`` parses ``sys.argv``
    and exits), in this process: ``{"returncode", "stdout", "stderr"}``, the command's output captured."""
    import io
    import traceback

    from tensorflow.python.tools import saved_model_cli

    argv, sys.argv = sys.argv, ["saved_model_cli", "show", "--dir", export_dir, "--all"]
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            saved_model_cli.main()
    except SystemExit as done:  # absl's app.run ends with sys.exit(None) when the listing is done
        code = 0 if done.code is None else done.code if isinstance(done.code, int) else 1
        if isinstance(done.code, str):
            stderr.write(done.code)
    except Exception:  # the command would die with this traceback
        code = 1
        stderr.write(traceback.format_exc())
    finally:
        sys.argv = argv
    return {"returncode": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def _waiting_child(part: str, *, cli: bool = False) -> int:
    """A process started ahead of its export (:class:`Processes`): it imports TensorFlow, then reads
    ``{"export_dir": ..., "reference": ...}`` from its standard input and runs its ``part`` of
    :data:`CHILD_PARTS` (with ``cli``, ``saved_model_cli show --all`` first: the report's
    ``"saved_model_cli"``). It ends quietly if its input closes first (the export failed or was not verified)."""
    started = _child_start()
    if cli:
        from tensorflow.python.tools import saved_model_cli  # noqa: F401  (imported ahead too)
    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    job = json.loads(line)
    listing = _run_saved_model_cli(job["export_dir"]) if cli else None
    report = _child(job["export_dir"], job["reference"], (part,), started)
    if listing is not None:
        report["saved_model_cli"] = listing
    print(json.dumps(report), flush=True)
    return 0


def _child_ok(report: Mapping[str, Any]) -> bool:
    """Whether a fresh process's report (one part or several) found nothing wrong."""
    return (not report["tfaural_importable"] and not report["modules"]
            and not report.get("ops", {}).get("problems") and bool(report.get("signatures", True))
            and all(r["ok"] for key in _CALL_REPORTS for r in report.get(key, {}).values()))


#: The parts of the child's report that hold signature calls: the SavedModel loaded with
#: tf.saved_model.load, with the TF1 session loader (what TF Serving's C++ loader does), and the
#: one-signature SavedModels (export.signature_models).
_CALL_REPORTS = ("signatures", "session_signatures", "signature_savedmodels")


def _check_calls(call: Any, reference: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
                 only: Sequence[str] | None = None) -> dict[str, Any]:
    """Calls every reference signature (or those in ``only``) through ``call`` and compares the outputs.

    ``call(signature, inputs)`` returns the outputs as arrays, or ``None`` if the signature is missing.
    """
    results: dict[str, Any] = {}
    for signature, parts in reference.items():
        if only is not None and signature not in only:
            continue
        try:
            outputs = call(signature, parts["inputs"])
        except Exception as err:  # report any failure of the call, with its message
            results[signature] = {"ok": False, "problem": f"{type(err).__name__}: {err}"}
            continue
        if outputs is None:
            results[signature] = {"ok": False, "problem": "signature missing from the SavedModel"}
            continue
        checked = {}
        for name, ref in parts["outputs"].items():
            atol = AUDIO_ATOL if (signature, name) == ("auralise", "audio") else 0.0
            checked[name] = (compare(outputs[name], ref, atol=atol) if name in outputs
                             else {"ok": False, "problem": "missing"})
        extra = sorted(set(outputs) - set(parts["outputs"]))
        results[signature] = {
            "ok": all(c["ok"] for c in checked.values()) and not extra,
            "outputs": checked,
            **({"problem": f"unexpected outputs {extra}"} if extra else {}),
        }
    return results


def _session_caller(export_dir: str) -> Any:
    """Calls signatures the way TF Serving does: the MetaGraph in a TF1 session, variables restored by its saver.

    Grappler's rewrites are off in this session: they are TensorFlow's own, and the ``tf.saved_model.load`` calls
    run them on every function already, while a session would re-optimise the whole graph once per signature
    (most of this check's time for a deep model). The session still lowers the graph's control flow and
    restores the variables as TF Serving's loader does.
    """
    import tensorflow as tf

    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], export_dir)

    def call(signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        if signature not in meta_graph.signature_def:
            return None
        spec = meta_graph.signature_def[signature]
        feed = {spec.inputs[name].name: value for name, value in inputs.items()}
        names = sorted(spec.outputs)
        values = session.run([spec.outputs[name].name for name in names], feed_dict=feed)
        return dict(zip(names, values))

    return call


def _check_signature_savedmodels(export_dir: str, reference: Mapping[str, Any]) -> dict[str, Any]:
    """Loads each one-signature SavedModel listed in ``metadata.json`` and checks its signature."""
    import tensorflow as tf

    # This runs in the isolated child, which must load the export without tfaural (so not through
    # tfaural.formats): one key, read as any TensorFlow user without our package would.
    with open(os.path.join(export_dir, "assets", "metadata.json"), encoding="utf-8") as handle:
        paths = json.load(handle).get("signature_savedmodels") or {}
    results: dict[str, Any] = {}
    for signature, relative in paths.items():
        try:
            loaded = tf.saved_model.load(os.path.join(export_dir, relative))
        except Exception as err:
            results[signature] = {"ok": False, "problem": f"cannot load {relative}: {type(err).__name__}: {err}"}
            continue

        def call(name: str, inputs: Mapping[str, np.ndarray], loaded: Any = loaded) -> dict[str, np.ndarray] | None:
            if name not in loaded.signatures:
                return None
            return {k: v.numpy() for k, v in loaded.signatures[name](
                **{key: tf.constant(value) for key, value in inputs.items()}).items()}

        results.update(_check_calls(call, reference, only=[signature]))
        if signature not in reference:
            results[signature] = {"ok": False, "problem": f"{relative}: no reference outputs"}
    return results


# --------------------------------------------------------------------------- saved_model_cli

_DTYPES = {"DT_FLOAT": "float32", "DT_INT32": "int32", "DT_STRING": "string", "DT_BOOL": "bool"}


def _saved_model_cli() -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.isfile(beside):
        return [beside]
    found = shutil.which("saved_model_cli")
    return [found] if found else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def parse_saved_model_cli(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """Parses ``saved_model_cli show --all`` into ``{signature: {"inputs"|"outputs": {name: dtype}}}``."""
    signatures: dict[str, dict[str, dict[str, str]]] = {}
    current: dict[str, dict[str, str]] | None = None
    pending: tuple[str, str] | None = None
    for line in text.splitlines():
        if match := re.match(r"^signature_def\['([^']+)'\]:", line):
            current = signatures.setdefault(match.group(1), {"inputs": {}, "outputs": {}})
        elif current is not None and (match := re.match(r"^\s+(inputs|outputs)\['([^']+)'\] tensor_info:", line)):
            pending = (match.group(1), match.group(2))
        elif current is not None and pending and (match := re.match(r"^\s+dtype: (\w+)", line)):
            current[pending[0]][pending[1]] = _DTYPES.get(match.group(1), match.group(1))
            pending = None
        elif line.startswith("Concrete Functions:"):
            break
    return signatures


def _cli_command(export_dir: str) -> list[str]:
    return [*_saved_model_cli(), "show", "--dir", export_dir, "--all"]


def _cli_listing(export_dir: str, returncode: int, stdout: str, stderr: str) -> dict[str, dict[str, dict[str, str]]]:
    if returncode:
        raise _export_error(f"saved_model_cli failed on {export_dir}: {stderr.strip()[-2000:]}")
    return parse_saved_model_cli(stdout)


def saved_model_cli_signatures(export_dir: str, *, timeout: float = 300.0) -> dict[str, dict[str, dict[str, str]]]:
    """Runs ``saved_model_cli show --dir EXPORT_DIR --all`` and parses its signature listing."""
    process = _start(_cli_command(export_dir))
    try:
        return _cli_listing(export_dir, *_finish(process, timeout=timeout, what="saved_model_cli"))
    finally:
        _stop(process)


def _cli_problems(listed: Mapping[str, Mapping[str, Mapping[str, str]]], documented: Mapping[str, Any]) -> list[str]:
    problems = []
    shown = {name for name in listed if not name.startswith("__")}
    if shown != set(documented):
        problems.append(f"saved_model_cli lists signatures {sorted(shown)}; metadata documents {sorted(documented)}")
    for name in shown & set(documented):
        for part in ("inputs", "outputs"):
            want = {key: spec["dtype"] for key, spec in documented[name][part].items()}
            if dict(listed[name][part]) != want:
                problems.append(f"{name} {part}: saved_model_cli shows {dict(listed[name][part])}, documented {want}")
    return problems


# --------------------------------------------------------------------------- the parent side


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("PYTHONPATH", None)
    return env


def _start(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())


def _finish(process: subprocess.Popen[str], *, timeout: float, what: str) -> tuple[int, str, str]:
    """Waits for ``process``: ``(returncode, stdout, stderr)``; an ExportError after ``timeout`` seconds."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        raise _export_error(f"{what} did not finish within {timeout:g} s") from None
    return process.returncode, stdout, stderr


def _stop(process: subprocess.Popen[str]) -> None:
    """Kills ``process`` if it still runs (the parent failed or was interrupted) and reaps it."""
    if process.poll() is None:
        process.kill()
        process.communicate()


def _waiting_command(part: str, *, cli: bool = False) -> list[str]:
    return [sys.executable, "-I", os.path.abspath(__file__), "--wait", part, *(["--cli"] if cli else [])]


class Processes:
    """The fresh processes of one verification, started before the export they check exists.

    Each process (one per part of :data:`CHILD_PARTS`; the :data:`CLI_HOST`'s also runs ``saved_model_cli``)
    imports TensorFlow (seconds of one core), says ``ready`` and waits on its standard input for the export's
    path. The exporter creates this object before it traces the signatures for their reference outputs:
    tracing is Python on one core, so on a 2-core machine the imports run on the other while it traces. They
    start one after the other (the second when the first is ready), so that the tracing keeps its own core;
    :meth:`run` starts one still waiting at once. A verification that starts them itself
    (:func:`verify_export` without ``processes``) pays the imports after the export instead.

    Use as a context manager; :meth:`close` (also on an error or Ctrl-C) kills the processes still running,
    and a process whose input closes before it got an export ends by itself.

    Args:
        cli: Also run ``saved_model_cli show --all`` (in the :data:`CLI_HOST` part's process).
    """

    def __init__(self, *, cli: bool = True) -> None:
        self.cli = cli
        self._processes: dict[str, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()
        self._all_now = False  # run() or close(): start the rest at once (or, closing, none)
        self._used = False
        self._start_next()
        self._stagger = threading.Thread(target=self._start_each_when_the_last_is_ready, daemon=True,
                                         name="verification-processes")
        self._stagger.start()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_next(self) -> subprocess.Popen[str] | None:
        """Starts the next part's process (the caller holds the lock or is the constructor)."""
        part = next((p for p in CHILD_PARTS if p not in self._processes), None)
        if part is None:
            return None
        self._processes[part] = subprocess.Popen(
            _waiting_command(part, cli=self.cli and part == CLI_HOST), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())
        return self._processes[part]

    def _start_each_when_the_last_is_ready(self) -> None:
        process: subprocess.Popen[str] | None = next(iter(self._processes.values()))
        while process is not None:
            assert process.stdout is not None
            process.stdout.readline()  # "ready", or "" if it ended (run() reports why)
            with self._lock:
                process = None if self._all_now else self._start_next()

    def close(self) -> None:
        """Kills the processes that still run and reaps them."""
        with self._lock:
            self._all_now = True
        self._used = True
        for process in list(self._processes.values()):
            _stop(process)
        self._stagger.join()

    def run(self, export_dir: str, reference_path: str, *, timeout: float
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, dict[str, str]]] | None]:
        """Sends the export to every process, then waits for each (``timeout`` seconds apiece).

        Returns:
            The ``loaded`` and ``session`` reports, and the parsed ``saved_model_cli`` listing (``None`` without
            ``cli``).

        Raises:
            ExportError: If a process fails, prints no report, or runs out of time.
        """
        if self._used:
            raise _export_error("a verification's processes check one export, once (these ran or were closed)")
        self._used = True
        with self._lock:
            self._all_now = True
            while self._start_next() is not None:
                pass
        line = json.dumps({"export_dir": export_dir, "reference": reference_path}) + "\n"
        for process in self._processes.values():  # all of them first: they run side by side
            try:
                assert process.stdin is not None
                process.stdin.write(line)
                process.stdin.flush()
            except (BrokenPipeError, OSError):  # it ended early; its exit code and stderr tell why (below)
                pass
        self._stagger.join(timeout)  # it reads the "ready" of one process at most; the rest is read here
        if self._stagger.is_alive():
            raise _export_error(f"a verification process did not start within {timeout:g} s")
        names = {"loaded": "tf.saved_model.load", "session": "TF1 session"}
        reports = {part: _child_report(export_dir, *_finish(self._processes[part], timeout=timeout,
                                                            what=f"the verification process ({names[part]})"))
                   for part in CHILD_PARTS}
        listed = None
        if self.cli:
            done = reports[CLI_HOST].pop("saved_model_cli", None)
            if done is None:
                raise _export_error(f"the verification process ({names[CLI_HOST]}) ran no saved_model_cli listing")
            listed = _cli_listing(export_dir, done["returncode"], done["stdout"], done["stderr"])
        return reports["loaded"], reports["session"], listed


def _child_report(export_dir: str, returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if returncode or not lines:
        raise _export_error(
            f"the verification process failed (exit {returncode}) on {export_dir}: {stderr.strip()[-3000:]}"
        )
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _merged(loaded: dict[str, Any], session: Mapping[str, Any]) -> dict[str, Any]:
    """The report of the ``loaded`` part with the ``session`` part's results (:data:`CHILD_PARTS`)."""
    report = {**loaded, "session_signatures": session["session_signatures"]}
    report["tfaural_importable"] = bool(loaded["tfaural_importable"] or session["tfaural_importable"])
    report["modules"] = sorted({*loaded["modules"], *session["modules"]})
    report["keras_imported"] = bool(loaded["keras_imported"] or session["keras_imported"])
    report["ok"] = _child_ok(report)
    return report


def _failures(report: Mapping[str, Any]) -> list[str]:
    problems = list(report["ops"]["problems"])
    if report["tfaural_importable"] or report["modules"]:
        problems.append(f"the fresh process could import project packages: {report['modules'] or ['tfaural']}")
    prefixes = {"signatures": "", "session_signatures": "TF1 session (as TF Serving loads it) ",
                "signature_savedmodels": "one-signature SavedModel "}
    for key, prefix in prefixes.items():
        for signature, result in report.get(key, {}).items():
            if result.get("problem"):
                problems.append(f"{prefix}{signature}: {result['problem']}")
            for output, check in result.get("outputs", {}).items():
                if not check["ok"]:
                    detail = check.get("problem") or (
                        f"max abs error {check['max_abs_error']:.3g} at scale {check['scale']:.3g}"
                    )
                    problems.append(f"{prefix}{signature}/{output}: {detail}")
    return problems


def verify_export(
    export_dir: str,
    *,
    reference: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]] | None = None,
    cli: bool = True,
    timeout: float = 900.0,
    processes: Processes | None = None,
) -> dict[str, Any]:
    """Verifies an export (see the module docstring).

    Args:
        export_dir: A version directory (``EXPORT_BASE/<N>`` or the exporter's temporary one).
        reference: ``{signature: {"inputs": {...}, "outputs": {...}}}`` computed in-process
            (``None``: the export's ``assets.extra/tfaural_reference.npz``).
        cli: Also check the ``saved_model_cli show --all`` listing.
        timeout: Seconds allowed for each subprocess.
        processes: The fresh processes, started ahead (:class:`Processes`, with the same ``cli``); ``None``
            starts them now. Either way they check this one export and end.

    Returns:
        The report: the fresh process's results plus ``"saved_model_cli"`` and ``"ok"``.

    Raises:
        ExportError: If any check fails (the message lists every problem).
    """
    from export.cleanup import remove_stale_temp_dirs, temp_prefix
    from tfaural.formats import read_export_metadata

    remove_stale_temp_dirs()  # the scratch folders of verifications that were killed
    export_dir = os.path.abspath(export_dir)
    metadata = read_export_metadata(export_dir)
    with tempfile.TemporaryDirectory(prefix=temp_prefix("verify")) as scratch:
        if reference is None:
            reference_path = os.path.join(export_dir, REFERENCE_FILE)
            if not os.path.isfile(reference_path):
                raise _export_error(f"{export_dir}: {REFERENCE_FILE} is missing; pass --run RUN_DIR to recompute it")
        else:
            reference_path = os.path.join(scratch, "reference.npz")
            save_reference(reference_path, reference)
        # Any failure or interruption here (an error, Ctrl-C, the SIGTERM python -m export turns into
        # SystemExit) kills the processes before the scratch folder is removed.
        with contextlib.ExitStack() as stack:
            if processes is None:
                processes = stack.enter_context(Processes(cli=cli))
            elif processes.cli != cli:
                raise ValueError(f"cli={cli} but the processes were started with cli={processes.cli}")
            loaded, session, listed = processes.run(export_dir, reference_path, timeout=timeout)
        report = _merged(loaded, session)
    problems = _failures(report)
    missing = sorted(set(metadata.signatures) - set(report["signatures"]))
    if missing:
        problems.append(f"no reference outputs for signatures {missing}")
    if listed is not None:
        report["saved_model_cli"] = listed
        problems += _cli_problems(listed, metadata.signatures)
    report["ok"] = not problems
    report["problems"] = problems
    if problems:
        raise _export_error(f"verification of {export_dir} failed: " + "; ".join(problems))
    return report


def _reference_from_run(export_dir: str, run_dir: str) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Recomputes the reference outputs with the run's Keras model on the stored inputs."""
    from export.budget import budget_for
    from export.module import ServingModule
    from tfaural.formats import read_export_metadata
    from tfaural.training.run import load_run

    metadata = read_export_metadata(export_dir)
    model, info = load_run(run_dir)
    budget = budget_for(
        metadata.family, max_request_seconds=metadata.max_request_seconds,
        max_deconv_feature_seconds=metadata.max_deconv_feature_seconds,
        deconv_chunk_elements=metadata.deconv_chunk_elements,
    )
    if metadata.max_seconds is None or metadata.max_deconv_seconds is None:
        raise _export_error(f"{metadata.path}: max_seconds or max_deconv_seconds is missing")
    module = ServingModule(
        model, info, max_seconds=metadata.max_seconds, max_deconv_seconds=metadata.max_deconv_seconds,
        budget=budget,
    )
    stored = load_reference(os.path.join(export_dir, REFERENCE_FILE))
    return {
        name: {"inputs": parts["inputs"], "outputs": module.call(name, parts["inputs"])}
        for name, parts in stored.items()
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m export.verify",
        description="Verify a tfaural SavedModel export: core-TF-only ops, every signature run in a fresh "
        "TensorFlow-only process and compared with the Keras model's outputs, and the saved_model_cli listing.",
    )
    parser.add_argument("export_dir", help="a version directory, e.g. exports/choi/1")
    parser.add_argument(
        "--run", metavar="RUN_DIR", default=None,
        help="recompute the reference outputs from this training run's Keras model "
        "(default: the reference stored in the export at export time)",
    )
    parser.add_argument("--no-cli", action="store_true", help="skip the saved_model_cli listing check")
    # Inline, not tfaural.cli.add_verbose_flag: this file also runs as the isolated child that must not import
    # tfaural. python -m export.verify is quiet through export/__init__.py (tfaural.cli.quiet_command_line_startup).
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's C++ start-up messages and the runner's own logging")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the JSON report. Exit 0 if verified, 2 with ``error: ...`` otherwise."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--wait"]:  # --wait loaded|session [--cli] (Processes)
        return _waiting_child(args_list[1], cli=args_list[2:3] == ["--cli"])
    if args_list[:1] == ["--child"]:  # --child EXPORT_DIR REFERENCE [--part loaded|session]
        parts = args_list[4:5] if args_list[3:4] == ["--part"] else CHILD_PARTS
        print(json.dumps(_child(args_list[1], args_list[2], parts)))
        return 0
    from tfaural.errors import TfauralError

    args = _parse_args(args_list)
    try:
        reference = _reference_from_run(args.export_dir, args.run) if args.run else None
        report = verify_export(args.export_dir, reference=reference, cli=not args.no_cli)
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
