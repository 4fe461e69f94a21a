"""What the command-line tools of tfaural, export and beam_jobs share.

Parsers (layer and feature lists, output folders), a prompt exit, and quiet start-up: a command
line shows tfaural's own progress and results, not TensorFlow's C++ start-up lines (the absl
pre-initialisation notice, "Could not find cuda drivers", "failed call to cuInit", CPU
instruction notices) that every process importing TensorFlow prints on a CPU machine.
``--verbose`` (or ``TFAURAL_VERBOSE=1``, which a verbose launcher passes to its children)
brings them back.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import importlib.abc
import importlib.util
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from tfaural.cpu import prefer_onednn
from tfaural.errors import ParameterError

__all__ = [
    "HelpFormatter",
    "parse_index_list",
    "choose_features",
    "add_selection_flags",
    "add_front_end_flags",
    "front_end_from_args",
    "check_output_folder",
    "positive_int",
    "exit_promptly",
    "VERBOSE_ENV",
    "QUIET_ENV",
    "add_verbose_flag",
    "is_verbose",
    "quiet_tensorflow_startup",
    "quiet_command_line_startup",
    "is_command_line",
    "command_line_startup",
    "KERAS_OPTIONAL_IMPORTS",
    "skip_keras_optional_imports",
    "is_startup_noise",
]

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, unless its help already says it or there is none worth showing.

    ``argparse.ArgumentDefaultsHelpFormatter`` appends "(default: X)" to every option: "(default: None)"
    after a help that says what the default is, "(default: True)" after a ``store_false`` switch such as
    ``--no-center``, which reads as if the switch were on.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text.lower() or action.default in (None, True, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return super()._get_help_string(action)


_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


def parse_index_list(spec: str, *, flag: str, valid: Sequence[int]) -> tuple[int, ...]:
    """Parses ``'all'``, ``'1,5'``, ``'1-5'`` or ``'1-3,7'`` into sorted unique integers, each in ``valid``.

    Args:
        spec: The flag's value.
        flag: The flag's name, for messages (e.g. ``"--layers"``).
        valid: The allowed values (``'all'`` means all of them).

    Returns:
        The chosen values, ascending.

    Raises:
        ParameterError: On a malformed spec, an empty selection or a value outside ``valid``.
    """
    allowed = sorted(set(int(v) for v in valid))
    text = str(spec).strip()
    if text.lower() == "all":
        if not allowed:
            raise ParameterError(f"{flag} all: there is nothing to choose from")
        return tuple(allowed)
    chosen: set[int] = set()
    for part in text.split(","):
        match = _RANGE.match(part)
        if not match:
            raise ParameterError(f"{flag} {spec!r} is invalid: expected 'all', a list such as 1,5, a range such as "
                                 "1-5, or both (1-3,7)")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ParameterError(f"{flag} {spec!r}: the range {lo}-{hi} is empty; write it low-high")
        chosen.update(range(lo, hi + 1))
    outside = sorted(chosen - set(allowed))
    if outside:
        raise ParameterError(f"{flag} {spec!r} names {outside[:10]}, which do not exist: expected values in "
                             f"{_describe_range(allowed)}")
    return tuple(sorted(chosen))


def choose_features(spec: str, *, n_maps: int, layer: int | str,
                    mean_activation: Sequence[float] | None = None) -> list[int]:
    """The features of a layer that ``--features`` names: ``topN``, ``all``, or a list such as ``0-7,12``.

    Args:
        spec: The flag's value.
        n_maps: The layer's number of feature maps.
        layer: The layer, for messages.
        mean_activation: ``[n_maps]``: each map's mean activation over the tracks, for ``topN`` (``None``:
            only the syntax and range are checked, and ``topN`` is the first N).

    Returns:
        ``topN``: the N most active, most active first (ties: the lower index first); otherwise ascending.

    Raises:
        ParameterError: Naming the flag and the value.
    """
    text = spec.strip().lower()
    if text.startswith("top"):
        try:
            count = int(text[3:])
        except ValueError:
            raise ParameterError(f"--features {spec!r} is invalid: expected topN (e.g. top4), all, or a list such "
                                 "as 0-7,12") from None
        if count < 1:
            raise ParameterError(f"--features {spec!r}: N must be at least 1")
        if mean_activation is None:
            return list(range(min(count, n_maps)))
        order = sorted(range(n_maps), key=lambda f: -float(mean_activation[f]))  # stable: ties keep index order
        return order[: min(count, n_maps)]
    return list(parse_index_list(spec, flag=f"--features (layer {layer})", valid=range(n_maps)))


def add_selection_flags(parser: argparse.ArgumentParser, *, layers_help: str, clip_help: str) -> None:
    """``--layers``, ``--features`` (:func:`choose_features`), ``--offset-seconds`` and ``--clip-seconds``: what
    the commands that deconvolve features of tracks' excerpts let their users choose."""
    parser.add_argument("--layers", default="all", help=layers_help)
    parser.add_argument("--features", default="top4",
                        help="features per layer: topN (largest mean activation on the tracks), all, or 0-7,12")
    parser.add_argument("--offset-seconds", type=float, default=0.0, help="start of each excerpt")
    parser.add_argument("--clip-seconds", type=float, default=None, help=clip_help)


def _top_db(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of dB or 'none'") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of dB (or 'none')")
    return value


def layer_names(text: str) -> tuple[str, ...]:
    """``--extra-levels``: comma-separated layer names (argparse type)."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no layer: expected names such as block1_out,block2_out")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r} names a layer twice")
    return names


EXTRA_LEVELS_HELP = ("layers to hear besides the conv blocks, comma-separated (a transformer block's output, an "
                     "attention layer): they become levels N+1, N+2, ... after the model's N conv levels")


def add_front_end_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of :class:`tfaural.config.FrontEndConfig`: what a Keras model takes where its file does not
    say it (``python -m tfaural.listen``, ``python -m tfaural.pretrained keras``); read them back with
    :func:`front_end_from_args`."""
    from tfaural.config import COMPRESSIONS, MEL_LAYOUTS, MEL_NORMS

    front = parser.add_argument_group("front end (only where the model file does not say it)")
    front.add_argument("--sample-rate", type=positive_int, help="sample rate of the model's input in Hz")
    front.add_argument("--n-fft", type=positive_int, help="FFT size in samples")
    front.add_argument("--hop-length", type=positive_int, help="STFT hop in samples")
    front.add_argument("--n-mels", type=positive_int, help="mel bands")
    front.add_argument("--power", type=float, help="exponent of the magnitude: 2 (power, default) or 1 (magnitude)")
    front.add_argument("--compression", help="how the model's input was compressed: " + ", ".join(COMPRESSIONS)
                       + " (db: librosa.power_to_db, db-max: with ref=np.max, ln-offset:0.001: YAMNet's)")
    front.add_argument("--top-db", type=_top_db, default=80.0, help="dB compressions: range kept below the top "
                       "('none': all)")
    front.add_argument("--amin", type=float, help="dB compressions: smallest value told apart (default: librosa's)")
    front.add_argument("--input-layer", help="the model's own compression layer (its output is what is heard)")
    front.add_argument("--layout", default="auto", choices=MEL_LAYOUTS, help="the spectrogram's layout in the model")
    front.add_argument("--linear-frequency", action="store_true",
                       help="the model sees the STFT's own bins, not mel bands")
    front.add_argument("--fmin", type=float, default=0.0, help="the mel bands' lowest edge in Hz")
    front.add_argument("--fmax", type=float, help="the mel bands' highest edge in Hz (default: Nyquist)")
    front.add_argument("--htk", action="store_true", help="HTK's mel scale (YAMNet, torchaudio) instead of Slaney's "
                       "(librosa's default)")
    front.add_argument("--mel-norm", default="slaney", choices=MEL_NORMS,
                       help="area-normalised mel triangles (librosa's default) or peaks of 1")
    front.add_argument("--n-mfcc", type=positive_int, help="the model sees the first N MFCCs of the compressed "
                       "spectrogram (librosa.feature.mfcc: DCT-II, ortho, over --n-mels bands; with --compression db)")
    front.add_argument("--no-center", dest="center", action="store_false",
                       help="frames as tf.signal.stft makes them (and librosa.stft(center=False)): from the first "
                       "sample on, no padding (default: centred frames, librosa's default)")
    front.add_argument("--frame-length", type=positive_int, help="with --no-center: samples per frame, zero-padded at "
                       "the end to --n-fft (tf.signal.stft's frame_length; default: --n-fft)")


def front_end_from_args(args: argparse.Namespace) -> Any:
    """The :class:`tfaural.config.FrontEndConfig` of :func:`add_front_end_flags`' flags.

    Raises:
        ParameterError: Naming the flag, for a value the config refuses.
    """
    from tfaural.config import COMPRESSIONS, FrontEndConfig, parse_compression
    from tfaural.errors import ConfigError

    if args.compression is not None:
        try:
            parse_compression(args.compression)
        except ConfigError:
            raise ParameterError(f"--compression {args.compression!r} is invalid: expected one of "
                                 f"{', '.join(COMPRESSIONS)} (C, EPS: positive numbers)") from None
    try:
        return FrontEndConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FrontEndConfig)})
    except ConfigError as err:
        match = re.match(r"FrontEndConfig\.(\w+)=(.*) is invalid: (.*)", str(err))
        if match is None:
            raise
        flag = "--no-center" if match.group(1) == "center" else "--" + match.group(1).replace("_", "-")
        raise ParameterError(f"{flag} {match.group(2)} is invalid: {match.group(3)}") from None


def _describe_range(values: Sequence[int]) -> str:
    if values and list(values) == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(str(v) for v in values)


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts: a whole number of at least 1.

    Raises:
        argparse.ArgumentTypeError: Otherwise (argparse prints it with the flag's name and exits 2).
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def check_output_folder(path: str | os.PathLike[str], *, flag: str = "--output", remote: bool = False) -> str:
    """Checks, before any work is done, that ``path`` is a folder that can be written, or can be created.

    Args:
        path: The folder.
        flag: The option that named it, for the message.
        remote: Whether the caller writes URIs (``gs://...``) too, as the Beam jobs do through Beam's
            filesystems. A URI is then passed through (its file system says what is wrong when it is
            written); otherwise it is refused, as a local path would make a folder named ``gs:``.

    Returns:
        ``path`` as a string.

    Raises:
        ParameterError: If ``path`` is a URI and ``remote`` is false, a file or a broken symbolic link, if
            the nearest part of it that exists is not a folder (e.g. ``file.txt/out``), or if that folder is
            not writable (a read-only folder or file system; root may write into read-only folders, so they
            pass for root).
    """
    text = os.fspath(path)
    if "://" in text:
        if remote:
            return text
        raise ParameterError(f"{flag} {text}: expected a local folder (this is written on this machine's "
                             "disk; copy the results to the URI afterwards, e.g. with gcloud storage cp -r)")
    if not text:
        raise ParameterError(f"{flag} is empty: expected a folder")
    full = os.path.abspath(text)
    if os.path.lexists(full) and not os.path.exists(full):
        raise ParameterError(f"{flag} {text}: is a broken symbolic link (to {os.readlink(full)}); expected a folder")
    if os.path.exists(full) and not os.path.isdir(full):
        raise ParameterError(f"{flag} {text}: is a file, not a folder; choose a folder")
    existing = full
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ParameterError(f"{flag} {text}: cannot be created, because {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(f"{flag} {text}: {existing} is not writable (read-only folder or file system); "
                             "choose a folder you can write to")
    return text


def exit_promptly(code: int) -> NoReturn:
    """Ends a command-line tool with ``code`` without the interpreter's final teardown.

    After a Beam job the interpreter spends about 0.5 s (a tenth of a one-track run) freeing
    every object of every imported module one by one before the process ends, work the
    operating system does at once. This runs what an orderly exit runs -- the ``atexit``
    handlers (``logging``'s flush, temporary-file clean-up, ...) after flushing the standard
    streams -- then ends the process with ``os._exit``. With a non-daemon thread still running
    (an orderly exit would wait for it), it falls back to ``sys.exit``.

    Args:
        code: The process exit code.
    """
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing left to flush
            stream.flush()
    os._exit(code)


# --------------------------------------------------------------------------- quiet start-up

#: Set to ``1`` by a ``--verbose`` command line, so that the processes it starts are verbose too.
VERBOSE_ENV = "TFAURAL_VERBOSE"
#: Set to ``1`` by a quiet command line, so that the processes it starts (Beam workers, model processes,
#: stage processes) leave TensorFlow's start-up lines out too when they import tfaural.
QUIET_ENV = "TFAURAL_QUIET"

#: TensorFlow's start-up lines on a machine without a GPU (C++ logging before and after absl's set-up),
#: and oneDNN's one notice about bool tensors on CPUs where it leaves them to Eigen.
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ (cudart_stub|cuda_platform|cuda_diagnostics|cuda_executor|cuda_dnn|cuda_fft"
    r"|cuda_blas|dso_loader|cpu_feature_guard|port)\.cc:\d+\] .*"
    r"|E\d{4} [\d:.]+\s+\d+ util\.cc:\d+\] oneDNN supports DT_BOOL only on platforms with AVX-512\. .*"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow with the appropriate "
    r"compiler flags\.)\s*$"
)


def is_startup_noise(line: str) -> bool:
    """True for one of TensorFlow's C++ start-up lines that quiet command lines leave out."""
    return bool(_STARTUP_NOISE.match(line))


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """Adds ``--verbose``: show what quiet start-up hides (the flag is read by :func:`is_verbose`)."""
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's C++ start-up messages and the runner's own logging")


def is_verbose(argv: Sequence[str] | None = None) -> bool:
    """True if ``--verbose`` is among ``argv`` (default ``sys.argv``) or :data:`VERBOSE_ENV` is ``1``."""
    args = sys.argv[1:] if argv is None else argv
    return os.environ.get(VERBOSE_ENV) == "1" or "--verbose" in args


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    """Captures file descriptor 2 (C++ logging writes there directly) and replays it without the start-up lines."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not is_startup_noise(line))
            if kept:
                os.write(2, kept.encode("utf-8"))


def _discover_devices() -> None:
    """Device discovery, which prints the rest of the start-up lines ("failed call to cuInit"), done now inside
    the filter; so is oneDNN's notice that it leaves bool tensors to Eigen (on some CPUs, once per process, at
    the first graph that transposes one, e.g. an export's; a 1x1 transpose is optimised away): 50 ms of tracing.

    Through the modules TensorFlow's public names are exported from, so that it also serves a ``tensorflow``
    whose public API is not built (the model process's runtime-only import, ``beam_jobs.tf_runtime``).
    """
    with contextlib.suppress(Exception):
        from tensorflow.python.eager import def_function
        from tensorflow.python.framework import config, constant_op
        from tensorflow.python.ops import array_ops

        config.list_physical_devices()
        def_function.function(array_ops.transpose)(constant_op.constant([[True, False]]))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` (and its device discovery) with the start-up lines filtered out,
    whichever finder after it provides the module (the usual one, or ``beam_jobs.tf_runtime``'s)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once: the real finder takes it from here
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def quiet_exec_module(module: Any) -> None:
            with _filtered_stderr():
                exec_module(module)
                _discover_devices()

        loader.exec_module = quiet_exec_module  # type: ignore[method-assign]
        return spec


#: What Keras imports as it is imported, if installed, for APIs no tfaural command calls: ``keras.wrappers``'
#: scikit-learn estimators (scikit-learn and, through it, SciPy's statistics) and ``keras.visualization``'s
#: plots (matplotlib's pyplot). Keras imports both inside ``try: ... except ImportError`` and goes on
#: without them; a command line skips them during its first ``import tensorflow`` (or ``keras``):
#: :func:`skip_keras_optional_imports` (``benchmarks/startup.py`` measures what that saves).
KERAS_OPTIONAL_IMPORTS = ("sklearn", "matplotlib")


class _WithoutKerasOptionalImports(importlib.abc.MetaPathFinder):
    """During the first import of TensorFlow or Keras, finds none of :data:`KERAS_OPTIONAL_IMPORTS` that is
    not imported yet (Keras's ``except ImportError`` takes over) for the thread that imports it; afterwards
    they import as usual."""

    def __init__(self) -> None:
        self.blocking: frozenset[str] = frozenset()
        self.thread: int | None = None

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.partition(".")[0] in self.blocking and threading.get_ident() == self.thread:
            raise ModuleNotFoundError(f"No module named {name!r} (left out while TensorFlow is imported)", name=name)
        if name not in ("tensorflow", "keras") or self.blocking:
            return None
        spec = importlib.util.find_spec(name) if self._remove() else None
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def without_optional_imports(module: Any) -> None:
            self.blocking = frozenset(m for m in KERAS_OPTIONAL_IMPORTS if m not in sys.modules)
            self.thread = threading.get_ident()
            sys.meta_path.insert(0, self)
            try:
                exec_module(module)
            finally:
                self.blocking = frozenset()
                self._remove()

        spec.loader.exec_module = without_optional_imports  # type: ignore[method-assign]
        return spec

    def _remove(self) -> bool:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
            return True
        return False


def skip_keras_optional_imports() -> bool:
    """Makes this process's first ``import tensorflow`` (or ``keras``) skip :data:`KERAS_OPTIONAL_IMPORTS`.

    For command lines (:func:`command_line_startup`): their processes never call the Keras APIs
    that need them, and import them as usual where they use them (figures, metrics), after
    TensorFlow. A program that imports the library keeps Keras as it is.

    Returns:
        True if the first import will skip them (False: TensorFlow or Keras is already imported).
    """
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        return False
    if not any(isinstance(finder, _WithoutKerasOptionalImports) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WithoutKerasOptionalImports())
    return True


def quiet_tensorflow_startup() -> bool:
    """Leaves TensorFlow's C++ start-up lines out of this process's standard error, unless verbose.

    Effective when called before TensorFlow is imported: the first ``import tensorflow`` and
    its device discovery then run with file descriptor 2 captured; every other line they print
    (a real error, a warning) is written out as it came once they are done. Nothing else is
    captured: a running job's output is never held back.

    The processes started from here on that import tfaural are quiet too (:data:`QUIET_ENV`).

    Returns:
        True if the filter is in place (False: verbose, or TensorFlow is already imported).
    """
    if is_verbose():
        return False
    os.environ[QUIET_ENV] = "1"
    if "tensorflow" in sys.modules:
        return False
    if not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    return True


def is_command_line() -> bool:
    """True in a tfaural command line (``python -m tfaural...``, ``export``, ``beam_jobs``, the ``tfaural-*``
    scripts) while its packages are imported, and in the processes a quiet one starts."""
    program = sys.argv[0] if sys.argv else ""
    # While ``python -m PACKAGE.MODULE`` imports the package, sys.argv[0] is "-m".
    return (program == "-m" or os.path.basename(program).startswith("tfaural-")
            or os.environ.get(QUIET_ENV) == "1")  # a process a quiet command line started


def command_line_startup() -> None:
    """What a command line sets up before anything imports TensorFlow (called as tfaural, ``export`` and
    ``beam_jobs`` are imported): oneDNN's kernels where tfaural measured them faster than TensorFlow's
    default (:func:`tfaural.cpu.prefer_onednn`; the processes it starts inherit the setting), Keras's imports
    for APIs no command calls left out (:func:`skip_keras_optional_imports`), then
    :func:`quiet_command_line_startup`. A program that imports the library keeps TensorFlow's defaults.
    """
    if is_command_line():
        prefer_onednn()
        skip_keras_optional_imports()
    quiet_command_line_startup()


def quiet_command_line_startup() -> None:
    """:func:`quiet_tensorflow_startup` for command lines only (:func:`is_command_line`): ``python -m
    tfaural...``, ``export``, ``beam_jobs``, the ``tfaural-*`` scripts and the processes they start.

    A program that imports the library keeps TensorFlow's output as it is. ``--verbose`` is
    passed on to the processes a command starts through :data:`VERBOSE_ENV`.
    """
    if not is_command_line():
        return
    if is_verbose():
        os.environ[VERBOSE_ENV] = "1"
        return
    quiet_tensorflow_startup()
