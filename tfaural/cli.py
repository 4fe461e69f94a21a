"""Small parsers shared by the command-line tools of tfaural and beam_jobs."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from tfaural.errors import ParameterError

__all__ = ["parse_index_list", "check_output_folder", "exit_promptly"]

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


def _describe_range(values: Sequence[int]) -> str:
    if values and list(values) == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(str(v) for v in values)


def check_output_folder(path: str | os.PathLike[str], *, flag: str = "--output") -> str:
    """Checks, before any work is done, that ``path`` is a folder that can be written, or can be created.

    A URI (``gs://...``) is passed through: its file system says what is wrong when it is written.

    Args:
        path: The folder.
        flag: The option that named it, for the message.

    Returns:
        ``path`` as a string.

    Raises:
        ParameterError: If ``path`` is a file or a broken symbolic link, if the nearest part of it that
            exists is not a folder (e.g. ``file.txt/out``), or if that folder is not writable (a read-only
            folder or file system; root may write into read-only folders, so they pass for root).
    """
    text = os.fspath(path)
    if "://" in text:
        return text
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
