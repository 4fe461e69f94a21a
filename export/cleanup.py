"""What an export leaves behind while it runs, and removing what a killed one left.

An export works in folders that are only meant to exist while it runs: the
version being written (``EXPORT_BASE/.tmp-<owner>-<uuid>``) and scratch folders in
the system temporary directory (``tfaural-assets-<owner>-*``, ``tfaural-verify-<owner>-*``).
A normal exit, an error, ``Ctrl-C`` and ``SIGTERM`` (``python -m export`` turns it
into an exception) remove them; ``SIGKILL`` or a power cut cannot. So every
folder's name records its owner, ``<host>-<pid>``, and each export first removes
the folders of owners that are gone:

* an owner on this host whose process no longer exists, or whose process started
  after the folder was made (the pid was reused), is gone;
* a folder of the old unowned form (``.tmp-<uuid>``, ``tfaural-verify-<random>``)
  older than the running process is stale;
* a folder of another host (a shared export base) is left alone unless it is older
  than :data:`FOREIGN_STALE_SECONDS`.

A signal can also land between the making of a folder and the set-up of its removal
(inside ``tempfile.TemporaryDirectory``'s constructor, say), so ``python -m export``
also removes every folder of its own on its way out (:func:`remove_own`).

Standard library only: :mod:`export.verify` uses it without TensorFlow.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable

__all__ = [
    "STAGING_PREFIX",
    "TEMP_KINDS",
    "FOREIGN_STALE_SECONDS",
    "owner_tag",
    "staging_name",
    "temp_prefix",
    "is_stale",
    "remove_stale",
    "remove_stale_temp_dirs",
    "remove_own",
]

#: Prefix of a version being written inside an export base (TF Serving ignores non-numeric folders).
STAGING_PREFIX = ".tmp-"
#: Kinds of scratch folders in the system temporary directory: ``tfaural-<kind>-<owner>-*``.
TEMP_KINDS = ("assets", "verify")
#: A folder of another host is stale after this long (no export runs for a day).
FOREIGN_STALE_SECONDS = 24 * 3600.0

logger = logging.getLogger(__name__)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def owner_tag() -> str:
    """``<host>-<pid>`` of this process (the host without ``-``)."""
    return f"{_host()}-{os.getpid()}"


def staging_name() -> str:
    """A fresh staging folder name: ``.tmp-<host>-<pid>-<uuid hex>``."""
    return f"{STAGING_PREFIX}{owner_tag()}-{uuid.uuid4().hex}"


def temp_prefix(kind: str) -> str:
    """``tempfile`` prefix of a scratch folder: ``tfaural-<kind>-<host>-<pid>-``."""
    return f"tfaural-{kind}-{owner_tag()}-"


_BOOT_TIME: float | None = None


def _boot_time() -> float | None:
    global _BOOT_TIME
    if _BOOT_TIME is None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("btime "):
                        _BOOT_TIME = float(line.split()[1])
        except OSError:
            return None
    return _BOOT_TIME


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), where ``/proc`` tells; else ``None``."""
    boot = _boot_time()
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    try:
        ticks = float(fields[19])  # field 22 of stat: start time in clock ticks after boot
    except (IndexError, ValueError):
        return None
    return None if boot is None else boot + ticks / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_OWNED = re.compile(r"^(?P<host>[^-]+)-(?P<pid>\d+)-.+$")


def is_stale(path: str, prefix: str, *, now: float | None = None) -> bool:
    """Whether ``path`` (a folder named ``prefix`` + ...) belongs to an export that is gone (module docstring)."""
    name = os.path.basename(path)
    try:
        made = os.stat(path).st_mtime
    except OSError:
        return False
    now = time.time() if now is None else now
    match = _OWNED.match(name[len(prefix):])
    if match is None:  # the old unowned form: stale if made before this process started
        started = _process_start(os.getpid())
        return started is not None and made < started
    if match["host"] != _host():
        return now - made > FOREIGN_STALE_SECONDS
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    if not _alive(pid):
        return True
    started = _process_start(pid)
    return started is not None and started > made + 1.0  # the pid was reused after the folder was made


def _remove(directory: str, prefix: str, *, when: Callable[[str], bool], why: str) -> list[str]:
    """Removes the folders named ``prefix*`` in ``directory`` for which ``when(path)`` holds; returns their paths."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for name in sorted(names):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path) and when(path):
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(path)
                logger.info("removed %s, %s", path, why)
    return removed


def remove_stale(directory: str, prefix: str) -> list[str]:
    """Removes the stale folders named ``prefix*`` in ``directory``; returns their paths."""
    return _remove(directory, prefix, when=lambda path: is_stale(path, prefix), why="left by an export that was killed")


def remove_stale_temp_dirs(kinds: tuple[str, ...] = TEMP_KINDS) -> list[str]:
    """Removes stale ``tfaural-<kind>-*`` folders of the system temporary directory; returns their paths."""
    root = tempfile.gettempdir()
    removed = []
    for kind in kinds:
        removed += remove_stale(root, f"tfaural-{kind}-")
    return removed


def remove_own(export_base: str | None = None) -> list[str]:
    """Removes every folder of this process: its staging folders in ``export_base`` and its scratch folders in
    the system temporary directory; returns their paths.

    For a process whose exports are over (``python -m export`` on its way out, however it ends): nothing of an
    export outlives it, whichever bytecode a signal interrupted.
    """
    places = [(tempfile.gettempdir(), f"tfaural-{kind}-{owner_tag()}-") for kind in TEMP_KINDS]
    if export_base is not None:
        places.append((export_base, f"{STAGING_PREFIX}{owner_tag()}-"))
    removed = []
    for directory, prefix in places:
        removed += _remove(directory, prefix, when=lambda path: True, why="this export's own, on the way out")
    return removed
