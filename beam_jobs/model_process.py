"""The model process of a local run, and loading one signature of an export.

A local job (the DirectRunner) runs the model in **one process of its own**, started by the
launcher as soon as the job knows its model (``python -m beam_jobs.tag`` starts it before it
even imports Beam): it imports TensorFlow's runtime (not its public API: :mod:`beam_jobs.tf_runtime`),
loads the one signature the job calls, runs it once on a segment of silence (TensorFlow optimises a
function's graph on its first call) and serves
the calls of the processes that decode the audio. Those processes, and the launcher, never
import TensorFlow; they send NumPy arrays over a Unix socket (``multiprocessing.connection``,
authenticated with a random key) and get NumPy arrays back. Start-up work overlaps: while the
model process loads, the launcher imports Beam, builds the pipeline and starts decoding; and
TensorFlow uses every core in one process instead of one copy of the model per worker.

:func:`load_signature` loads only what a signature needs: an export lists, in ``metadata.json``
(``signature_savedmodels``), a SavedModel of its own for each signature the batch jobs call
(:mod:`export.signature_models`); without it (exports made before), the whole export is loaded.

``--precision bfloat16`` (the tag and extract_features jobs) turns on TensorFlow's Grappler rewrite
``auto_mixed_precision_onednn_bfloat16`` before the model loads: oneDNN computes the convolutions
and products in bfloat16 (float32 accumulation) on the float32 export, without a new export. It is a
process-wide option, like the thread counts: the model process, or a Beam worker process, sets it
for everything it runs.

The model process ends when the launcher closes its standard input (:meth:`ModelProcess.close`),
and also when the launcher dies (the pipe closes with it).

This module imports neither TensorFlow nor Beam at module level: it runs as
``python -m beam_jobs.model_process`` (the model process), in the launcher and in the workers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from beam_jobs import tf_runtime
from beam_jobs.scratch import PREFIX
from tfaural.errors import ModelError, ModelLoadError, ParameterError
from tfaural.formats import ExportMetadata, read_export_metadata, resolve_export_dir

__all__ = [
    "PRECISIONS",
    "SignatureCallError",
    "tf_error_reason",
    "LoadedSignature",
    "DeferredSignature",
    "signature_savedmodel",
    "apply_threads",
    "load_savedmodel",
    "signature_function",
    "load_signature",
    "ModelServerAddress",
    "ModelProcess",
    "RemoteSignature",
    "connect",
    "prestart",
    "take_prestarted",
    "close_prestarted",
    "serve",
    "main",
]

logger = logging.getLogger("beam_jobs.model_process")  # also when run as __main__

#: Seconds a worker waits for the model process to accept its connection.
CONNECT_TIMEOUT = 120.0
#: Longest socket path (bytes) used as a file: ``sun_path`` holds 108 bytes on Linux, 104 on macOS,
#: with the terminating NUL. A longer one (a deep temporary folder) becomes an abstract name (Linux).
MAX_SOCKET_PATH = 100
#: ``--precision`` values: float32 (the export as it is) and bfloat16 (the Grappler rewrite, see above).
PRECISIONS = ("float32", "bfloat16")
#: Signatures whose only batched input is ``waveform`` (warmed up on one segment of silence).
_WAVEFORM_SIGNATURES = frozenset({"serving_default", "features"})


# --------------------------------------------------------------------------- calling a loaded signature

_ASSERT_MESSAGE = re.compile(r"assertion failed: \[(.*?)\]\s*(?:\n|\[\[|$)", re.DOTALL)


def tf_error_reason(err: BaseException) -> str:
    """A one-line reason for a TensorFlow error: the message of a failed in-graph check if there is one."""
    message = getattr(err, "message", None) or str(err)
    match = _ASSERT_MESSAGE.search(message)
    text = match.group(1) if match else message
    return " ".join(text.split())[:500]


class SignatureCallError(Exception):
    """A signature call failed (raised where the model runs, picklable for a shared model's proxy).

    Attributes:
        error: The original error's type name, e.g. ``"InvalidArgumentError"``.
        reason: What was wrong (the in-graph check's message when there is one).
        example_error: One bad input can cause it (a failed check, a bad shape), as
            opposed to e.g. running out of memory.
    """

    def __init__(self, error: str, reason: str, example_error: bool) -> None:
        super().__init__(error, reason, example_error)
        self.error = error
        self.reason = reason
        self.example_error = example_error

    def __str__(self) -> str:
        return f"{self.error}: {self.reason}"


@dataclasses.dataclass
class LoadedSignature:
    """A loaded signature: what ``SignatureModelHandler.load_model`` returns when the model runs in-process.

    Its methods take and return NumPy arrays only, so that a model shared between
    worker processes (``share_across_processes``) is called through Beam's proxy
    without TensorFlow in the calling process.

    Attributes:
        module: The object returned by ``tf.saved_model.load`` (kept alive: the function refers to it).
        function: The signature's concrete function.
        batched: Names of the inputs with a batch axis.
        input_names: All input names, in call order.
    """

    module: Any
    function: Any
    batched: frozenset[str]
    input_names: tuple[str, ...]

    def spec(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """``(batched input names, all input names)``."""
        return self.batched, self.input_names

    def call(self, inputs: dict[str, Any], outputs: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Calls the signature.

        Args:
            inputs: Every input by name (batched ones with their batch axis), NumPy values.
            outputs: Output names to return (``None``: all).

        Returns:
            The outputs as NumPy arrays.

        Raises:
            SignatureCallError: If the call fails.
        """
        try:
            result = self.function(**{name: tf_runtime.constant(inputs[name]) for name in self.input_names})
            return {k: v.numpy() for k, v in result.items() if outputs is None or k in outputs}
        except Exception as err:
            tf_errors = tf_runtime.errors()
            example_error = (isinstance(err, (tf_errors.InvalidArgumentError, tf_errors.OutOfRangeError,
                                              ValueError, TypeError))
                             and not isinstance(err, tf_errors.ResourceExhaustedError))
            raise SignatureCallError(type(err).__name__, tf_error_reason(err), example_error) from None

    def call_each(
        self, inputs: Sequence[dict[str, Any]], outputs: tuple[str, ...] | None = None
    ) -> list[dict[str, np.ndarray] | SignatureCallError]:
        """Calls the signature once per element of ``inputs`` (one round trip for a shared model).

        Args:
            inputs: One dict per call, as :meth:`call` takes it (batched inputs with a batch axis of 1).
            outputs: Output names to return (``None``: all).

        Returns:
            Per call, its outputs, or the :class:`SignatureCallError` it raised.
        """
        results: list[dict[str, np.ndarray] | SignatureCallError] = []
        for one in inputs:
            try:
                results.append(self.call(one, outputs))
            except SignatureCallError as err:
                results.append(err)
        return results


class DeferredSignature:
    """A signature loaded in this process at its first use, then called like :class:`LoadedSignature`.

    What ``SignatureModelHandler.load_model`` returns when the model runs in-process: RunInference
    sets its model up before the first example arrives, so a worker that never gets one (every track
    kept from an earlier run with ``--skip-existing``) would otherwise import TensorFlow and load the
    export for nothing. A load that fails is not tried again: every use raises the same
    :class:`~tfaural.errors.ModelLoadError`. It has methods only (no properties, which Beam's
    ``share_model_across_processes`` proxy reads when it sets the object up).

    Args:
        load: Loads the signature (raises :class:`~tfaural.errors.ModelError` if it cannot).
        export_dir: The export (named in the error).
    """

    #: One load at a time in a process, whichever signature: a worker's threads (one per bundle, two handlers of
    #: a job) reach their first examples together, and two threads importing TensorFlow at once can stop on
    #: Python's module locks (``_DeadlockError``) and leave it half imported.
    _loading = threading.Lock()

    def __init__(self, load: Callable[[], LoadedSignature], *, export_dir: str) -> None:
        self._load = load
        self._export_dir = export_dir
        self._loaded: LoadedSignature | None = None
        self._error: str | None = None

    def _signature(self) -> LoadedSignature:
        if self._loaded is not None:
            return self._loaded
        with DeferredSignature._loading:
            if self._loaded is None and self._error is None:
                try:
                    self._loaded = self._load()
                except Exception as err:  # ModelError or anything TensorFlow raises: every use gets the message
                    self._error = str(err) if isinstance(err, ModelError) else f"{type(err).__name__}: {err}"
            if self._loaded is None:
                raise ModelLoadError(f"the model {self._export_dir!r} could not be loaded: {self._error}")
            return self._loaded

    def spec(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """``(batched input names, all input names)`` (loads the signature)."""
        return self._signature().spec()

    def call(self, inputs: dict[str, Any], outputs: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """:meth:`LoadedSignature.call` (loads the signature first)."""
        return self._signature().call(inputs, outputs)

    def call_each(
        self, inputs: Sequence[dict[str, Any]], outputs: tuple[str, ...] | None = None
    ) -> list[dict[str, np.ndarray] | SignatureCallError]:
        """:meth:`LoadedSignature.call_each` (loads the signature first)."""
        return self._signature().call_each(inputs, outputs)


def _join(base: str, relative: str) -> str:
    return base.rstrip("/") + "/" + relative


def _gfile_metadata(export_dir: str) -> ExportMetadata:
    """The export's ``metadata.json``, read with ``tf.io.gfile`` (any filesystem TensorFlow reads)."""
    return read_export_metadata(export_dir, read_bytes=tf_runtime.gfile_read)


def signature_savedmodel(export_dir: str, signature: str) -> str:
    """The SavedModel to load for ``signature``: its own (``metadata.json``: ``signature_savedmodels``)
    if the export has one, else the export itself. Reads the export with ``tf.io.gfile`` (local or remote)."""
    try:
        relative = _gfile_metadata(export_dir).signature_savedmodels.get(signature)
    except ModelError:
        return export_dir  # loading the export reports what is wrong with it
    if relative and tf_runtime.gfile_exists(_join(export_dir, f"{relative}/saved_model.pb")):
        return _join(export_dir, relative)
    return export_dir


def apply_threads(threads: int | None) -> None:
    """TensorFlow's intra- and inter-op thread counts for this process (:func:`beam_jobs.tf_runtime.set_threads`):
    call it before anything in the process uses TensorFlow, reading the export included (``None``: leave
    TensorFlow's default). If the runtime already runs with other counts, they stay, with a warning."""
    if threads and not tf_runtime.set_threads(threads):
        logger.warning("TensorFlow already runs in this process with its own thread counts: %d intra- and "
                       "inter-op threads cannot be set now", threads)


def load_savedmodel(path: str, *, export_dir: str, threads: int | None = None, precision: str = "float32") -> Any:
    """``tf.saved_model.load(path)`` with TensorFlow's thread counts and precision set first.

    Args:
        path: The SavedModel to load (an export, or one signature's own SavedModel in it).
        export_dir: The export it belongs to (named in errors).
        threads: TensorFlow intra- and inter-op threads (``None``: TensorFlow's default); if the runtime
            already runs with other counts in this process, they stay (with a warning).
        precision: ``"float32"``, or ``"bfloat16"``: turn on Grappler's
            ``auto_mixed_precision_onednn_bfloat16`` rewrite for every function this process runs
            from now on (see the module docstring). ``"float32"`` leaves the process's setting as it is.

    Raises:
        ModelError: If the SavedModel cannot be loaded.
        ParameterError: On another ``precision``.
    """
    if precision not in PRECISIONS:
        raise ParameterError(f"precision {precision!r} is invalid: expected one of {'|'.join(PRECISIONS)}")
    if precision == "bfloat16":
        tf_runtime.enable_bfloat16_rewrite()
    apply_threads(threads)
    try:
        return tf_runtime.load(path)
    except (OSError, ValueError, tf_runtime.errors().OpError) as err:
        raise ModelError(f"cannot load the SavedModel in {export_dir!r}: {err}") from None


def signature_function(loaded: Any, signature: str, *, export_dir: str) -> Any:
    """The concrete function of ``signature`` in a loaded SavedModel.

    Raises:
        ModelError: If it has no such signature.
    """
    if signature not in loaded.signatures:
        raise ModelError(f"{export_dir!r} has no signature {signature!r}; it has {sorted(loaded.signatures)}")
    return loaded.signatures[signature]


def load_signature(export_dir: str, signature: str, *, threads: int | None = None,
                   precision: str = "float32") -> tuple[Any, Any]:
    """Loads one signature of an export, from its own SavedModel when the export has one.

    Args:
        export_dir: The export version directory (local or remote).
        signature: The signature's name.
        threads: TensorFlow intra- and inter-op threads (``None``: TensorFlow's default); see
            :func:`load_savedmodel`.

    Returns:
        ``(loaded object, concrete function)``.

    Raises:
        ModelError: If the SavedModel cannot be loaded or lacks the signature.
    """
    apply_threads(threads)  # before reading the export, which imports TensorFlow
    loaded = load_savedmodel(signature_savedmodel(export_dir, signature), export_dir=export_dir, threads=threads,
                             precision=precision)
    return loaded, signature_function(loaded, signature, export_dir=export_dir)


# --------------------------------------------------------------------------- the model process (server side)


def _warm_up(loaded: LoadedSignature, export_dir: str, signature: str) -> None:
    """One call on a segment of silence: TensorFlow optimises the function's graph on its first call."""
    if signature not in _WAVEFORM_SIGNATURES or loaded.input_names != ("waveform",):
        return
    length = _gfile_metadata(export_dir).segment_length
    try:
        loaded.call({"waveform": np.zeros((1, length), np.float32)})
    except SignatureCallError as err:  # not fatal: the real calls will report it
        logger.warning("the warm-up call of %s failed: %s", signature, err)


class _Server:
    """Accepts connections and answers ``("spec",)``, ``("call", inputs, outputs)`` and
    ``("call_each", [inputs, ...], outputs)`` requests (once the model has loaded or failed to), and
    ``("status",)`` at once: ``("ok", None)`` while loading or when loaded, ``("ok", message)`` if it failed."""

    def __init__(self, listener: Any) -> None:
        self._listener = listener
        self._ready = threading.Event()
        self._lock = threading.Lock()  # one signature call at a time: each uses every core
        self._loaded: LoadedSignature | None = None
        self._load_error: str | None = None

    def start_accepting(self) -> None:
        threading.Thread(target=self._accept, name="accept", daemon=True).start()

    def set_loaded(self, loaded: LoadedSignature | None, error: str | None = None) -> None:
        self._loaded, self._load_error = loaded, error
        self._ready.set()

    def _accept(self) -> None:
        while True:
            try:
                connection = self._listener.accept()
            except (OSError, EOFError):
                continue  # a client that failed authentication or went away
            threading.Thread(target=self._serve, args=(connection,), name="client", daemon=True).start()

    def _serve(self, connection: Any) -> None:
        with connection:
            while True:
                try:
                    request = connection.recv()
                except (EOFError, OSError):
                    return
                if request[0] == "status":
                    failed = self._ready.is_set() and self._loaded is None
                    connection.send(("ok", (self._load_error or "the model did not load") if failed else None))
                    continue
                self._ready.wait()
                connection.send(self._answer(request))

    def _answer(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        if self._loaded is None:
            return ("load_error", self._load_error or "the model did not load")
        if request[0] == "spec":
            return ("ok", self._loaded.input_names)
        kind, inputs, outputs = request
        try:
            with self._lock:
                if kind == "call_each":  # per call, its outputs or its error as a tuple: this module is
                    # __main__ here, so its classes would not unpickle in the caller
                    return ("ok", [answer if isinstance(answer, dict) else
                                   ("call_error", answer.error, answer.reason, answer.example_error)
                                   for answer in self._loaded.call_each(inputs, outputs)])
                return ("ok", self._loaded.call(inputs, outputs))
        except SignatureCallError as err:
            return ("call_error", err.error, err.reason, err.example_error)
        except Exception as err:  # anything else: reported to the caller, the process keeps serving
            return ("call_error", type(err).__name__, str(err)[:1000], False)


def serve(export_dir: str, signature: str, socket_path: str, authkey: bytes, *, threads: int | None = None,
          precision: str = "float32") -> None:
    """The model process: listen at once, then load and warm up the signature, then serve until stdin closes.

    ``socket_path`` is a file path, or ``@name`` for a name in Linux's abstract socket namespace.
    """
    from multiprocessing.connection import Listener

    listener = Listener(_socket_address(socket_path), family="AF_UNIX", authkey=authkey)
    server = _Server(listener)
    server.start_accepting()  # clients connect while TensorFlow loads; their requests wait for it
    start = time.perf_counter()
    try:
        module, function = load_signature(export_dir, signature, threads=threads, precision=precision)
        loaded = LoadedSignature(module, function, frozenset(), tuple(function.structured_input_signature[1]))
        _warm_up(loaded, export_dir, signature)
    except Exception as err:  # ModelError or anything TensorFlow raises: every caller gets the message
        message = str(err) if isinstance(err, ModelError) else f"{type(err).__name__}: {err}"
        logger.error("model process: %s", message)
        server.set_loaded(None, message)
    else:
        logger.info("model process %d: %s of %s ready in %.1f s%s", os.getpid(), signature, export_dir,
                    time.perf_counter() - start, "" if precision == "float32" else f", in {precision}")
        server.set_loaded(loaded)


def _socket_address(socket: str) -> str:
    """The address to listen at or connect to: ``@name`` (a command-line argument holds no NUL) is abstract."""
    return "\0" + socket[1:] if socket.startswith("@") else socket


def _watch_stdin(socket_path: str) -> None:
    """Exits the process when the launcher closes our standard input (or dies), removing the socket's folder."""
    try:
        while sys.stdin.buffer.read(65536):
            pass
    finally:
        if not socket_path.startswith("@"):
            _remove_socket_folder(socket_path)
        os._exit(0)


def _remove_socket_folder(socket_path: str) -> None:
    """Removes the folder ModelProcess made for the socket (only the socket if the folder was given by hand)."""
    folder = os.path.dirname(os.path.abspath(socket_path))
    if os.path.basename(folder).startswith(PREFIX):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(socket_path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m beam_jobs.model_process --model DIR --signature NAME --socket PATH [--threads N] [--precision P]``.

    The authentication key is the first line of standard input (hex); the process ends when
    standard input is closed.
    """
    parser = argparse.ArgumentParser(prog="python -m beam_jobs.model_process",
                                     description="Serve one signature of a tfaural export to a local job's workers "
                                                 "(started by the jobs; not meant to be run by hand).")
    parser.add_argument("--model", required=True, help="export version directory")
    parser.add_argument("--signature", required=True, help="signature to serve")
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow intra- and inter-op threads")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help="see the module docstring")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the launcher decides (it closes this process's standard
    # input, which ends it); requests in flight are answered instead of failing with "went away".
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    authkey = bytes.fromhex(sys.stdin.buffer.readline().decode("ascii").strip())
    threading.Thread(target=_watch_stdin, args=(args.socket,), name="stdin", daemon=True).start()
    if args.threads:  # before the import: a quiet import initialises the runtime (tf_runtime.set_threads)
        os.environ.update(dict.fromkeys(tf_runtime.THREAD_VARIABLES, str(args.threads)))
    tf_runtime.import_runtime()
    serve(args.model, args.signature, args.socket, authkey, threads=args.threads, precision=args.precision)
    threading.Event().wait()  # serve until stdin closes (the watcher exits the process)
    return 0


# --------------------------------------------------------------------------- launcher side


@dataclasses.dataclass(frozen=True)
class ModelServerAddress:
    """How workers reach a model process (picklable; travels inside the model handler).

    Attributes:
        socket: The Unix socket path (a leading NUL: a name in Linux's abstract namespace, used when the
            temporary folder is too deep for a socket path).
        authkey: The connection's authentication key.
        pid: The model process (to tell a process that died from one still loading).
        export_dir: The export it serves.
        signature: The signature it serves.
    """

    socket: str
    authkey: bytes = dataclasses.field(repr=False)
    pid: int
    export_dir: str
    signature: str


class ModelProcess:
    """Starts the model process (see the module docstring) and ends it on :meth:`close`.

    Args:
        export_dir: The export version directory.
        signature: The signature to serve.
        threads: TensorFlow threads of the model process (``None``: one per core).
        precision: ``"float32"`` or ``"bfloat16"`` (see the module docstring).
    """

    def __init__(self, export_dir: str, signature: str, *, threads: int | None = None,
                 precision: str = "float32") -> None:
        # Mode 0700: only this user reaches the socket. Named like the run folders of beam_jobs.scratch
        # (tfaural-job-<launcher pid>-...): if the launcher is killed, the next run of any job removes it.
        self._folder: str | None = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-model-")
        socket_path = os.path.join(self._folder, "model.sock")
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:  # a deep temporary folder (e.g. a test's TMPDIR)
            shutil.rmtree(self._folder, ignore_errors=True)
            if sys.platform.startswith("linux"):  # a name, no file: reached by the random key alone
                self._folder, socket_path = None, f"@tfaural-model-{os.getpid()}-{secrets.token_hex(8)}"
            else:
                self._folder = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-model-", dir="/tmp")
                socket_path = os.path.join(self._folder, "model.sock")
        authkey = secrets.token_bytes(32)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                                           if p)}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        command = [sys.executable, "-m", "beam_jobs.model_process", "--model", export_dir, "--signature", signature,
                   "--socket", socket_path]
        if threads:
            command += ["--threads", str(threads)]
        if precision != "float32":
            command += ["--precision", precision]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
        assert self.process.stdin is not None
        self.process.stdin.write(authkey.hex().encode("ascii") + b"\n")
        self.process.stdin.flush()
        self.address = ModelServerAddress(_socket_address(socket_path), authkey, self.process.pid, export_dir,
                                          signature)
        self.threads = threads
        self.precision = precision
        logger.info("the model runs in a process of its own (pid %d): %s of %s%s", self.process.pid, signature,
                    export_dir, "" if precision == "float32" else f", in {precision}")

    def serves(self, export_dir: str, signature: str, threads: int | None = None, precision: str = "float32") -> bool:
        """True if this process serves that signature of that export so (and is still running)."""
        return (self.process.poll() is None and self.address.export_dir == export_dir
                and self.address.signature == signature and self.threads == threads and self.precision == precision)

    def close(self) -> None:
        """Ends the model process (closing its standard input) and removes its socket folder."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def load_error(self) -> str | None:
        """Why the model process could not load the model; ``None`` if it loaded or is still loading.

        Asks without waiting for the load. A process that has exited counts as failed.
        """
        if self.process.poll() is not None:
            return f"the model process (pid {self.process.pid}) exited with code {self.process.returncode}"
        try:
            with connect(self.address, timeout=30) as connection:
                connection.send(("status",))
                answer = connection.recv()
        except (ModelError, EOFError, OSError) as err:
            return str(err)
        return answer[1]  # type: ignore[no-any-return]

    def __enter__(self) -> ModelProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_PRESTARTED: ModelProcess | None = None


def prestart(argv: Sequence[str], *, signature: str) -> None:
    """Starts the model process for a job's command line before the job imports Beam (best effort).

    Only for a local export directory with that signature and the local DirectRunner (no
    ``--runner``, or ``--runner=DirectRunner``); the job adopts the process
    (:func:`take_prestarted`) once it has validated its flags, or :func:`close_prestarted`
    ends it. Anything unexpected here is left for the job to report.
    """
    global _PRESTARTED
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model")
    parser.add_argument("--runner")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("-h", "--help", action="store_true")
    try:
        args, _ = parser.parse_known_args(list(argv))
    except SystemExit:
        return
    precision = str(args.precision).lower()  # as the job's settings read it
    if (args.help or not args.model or (args.runner or "DirectRunner").rsplit(".", 1)[-1] != "DirectRunner"
            or precision not in PRECISIONS):
        return
    # an export base folder stands for its newest version, as in the job's settings (beam_jobs.inference
    # .resolve_model_dir, which needs Beam: the same rule on the local filesystem gives the same path)
    export_dir = resolve_export_dir(args.model)
    try:
        if signature not in read_export_metadata(export_dir).signatures:
            return
    except ModelError:
        return
    _PRESTARTED = ModelProcess(export_dir, signature, precision=precision)


def take_prestarted(export_dir: str, signature: str, threads: int | None = None,
                    precision: str = "float32") -> ModelProcess | None:
    """The prestarted model process if it serves that signature of that export so, else ``None`` (it is closed)."""
    global _PRESTARTED
    started, _PRESTARTED = _PRESTARTED, None
    if started is not None and started.serves(export_dir, signature, threads, precision):
        return started
    if started is not None:
        started.close()
    return None


def close_prestarted() -> None:
    """Ends a prestarted model process that no job adopted."""
    global _PRESTARTED
    if _PRESTARTED is not None:
        _PRESTARTED.close()
        _PRESTARTED = None


# --------------------------------------------------------------------------- worker side


class RemoteSignature:
    """A signature served by a model process, called like :class:`LoadedSignature` (NumPy in, NumPy out).

    One connection per thread, opened on the first call; calls block until the model process has
    loaded, so a worker can decode while the model loads.

    Args:
        address: The model process.
        input_names: The signature's inputs (from ``metadata.json``); ``None``: ask the model
            process (which waits until it has loaded).
        batched: The inputs with a batch axis.
    """

    def __init__(self, address: ModelServerAddress, input_names: Sequence[str] | None = None,
                 batched: frozenset[str] | None = None) -> None:
        self.address = address
        self._local = threading.local()
        if input_names is None:
            input_names = self._request(("spec",))[1]
        self.input_names: tuple[str, ...] = tuple(input_names)
        self.batched = batched if batched is not None else frozenset()

    def spec(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """``(batched input names, all input names)``."""
        return self.batched, self.input_names

    def call(self, inputs: dict[str, Any], outputs: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Calls the signature in the model process.

        Raises:
            SignatureCallError: If the call fails there.
            ModelLoadError: If the model process could not load the model.
            ModelError: If the model process went away.
        """
        answer = self._request(("call", {name: np.asarray(inputs[name]) for name in self.input_names}, outputs))
        return answer[1]  # type: ignore[no-any-return]

    def call_each(
        self, inputs: Sequence[dict[str, Any]], outputs: tuple[str, ...] | None = None
    ) -> list[dict[str, np.ndarray] | SignatureCallError]:
        """One call per element of ``inputs``, all in one round trip to the model process.

        Returns:
            Per call, its outputs, or the :class:`SignatureCallError` it raised there.

        Raises:
            ModelLoadError: If the model process could not load the model.
            ModelError: If the model process went away.
        """
        request = [{name: np.asarray(one[name]) for name in self.input_names} for one in inputs]
        return [answer if isinstance(answer, dict) else SignatureCallError(*answer[1:])
                for answer in self._request(("call_each", request, outputs))[1]]

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = connect(self.address)
        return connection

    def _request(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        connection = self._connection()
        try:
            connection.send(request)
            answer = connection.recv()
        except (EOFError, OSError) as err:
            self._local.connection = None
            raise ModelError(f"the model process (pid {self.address.pid}) went away: {err}") from None
        if answer[0] == "ok":
            return answer  # type: ignore[no-any-return]
        if answer[0] == "call_error":
            raise SignatureCallError(answer[1], answer[2], answer[3])
        raise ModelLoadError(f"the model {self.address.export_dir!r} could not be loaded: {answer[1]}")


def _alive(pid: int) -> bool:
    """True if process ``pid`` runs (a zombie, dead but not yet reaped by the launcher, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def connect(address: ModelServerAddress, *, timeout: float = CONNECT_TIMEOUT) -> Any:
    """A connection to the model process, waiting for it to listen (it does so at once).

    Raises:
        ModelError: If the process died or does not listen within ``timeout`` seconds.
    """
    from multiprocessing.connection import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            return Client(address.socket, family="AF_UNIX", authkey=address.authkey)
        except (FileNotFoundError, ConnectionRefusedError):
            if not _alive(address.pid):
                raise ModelError(f"the model process (pid {address.pid}) for {address.export_dir!r} exited before "
                                 "it was ready; its messages are above") from None
            if time.monotonic() > deadline:
                raise ModelError(f"the model process (pid {address.pid}) did not listen within {timeout:g} s") from None
            time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
