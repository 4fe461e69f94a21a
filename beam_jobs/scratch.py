"""A private temporary folder for each run of a job, removed when the run ends (and by the next run if killed).

The worker processes of a local multi-process run leave files in the system's
temporary folder: Beam's ``multi_process_shared`` (the model shared between the
worker processes of the multi-processing DirectRunner) creates
``<tag>.lock`` and ``<tag>.address`` files for the model and for its
``_model_status`` there and never removes them, with a new random tag per run;
a local Dask cluster keeps its ``dask-scratch-space`` there. :func:`run_folder`
gives every run a folder of its own, ``<temp>/tfaural-job-<pid>-<random>/``, makes
it the temporary folder of every process the run starts (``TMPDIR``, which worker
processes inherit, and Dask's ``temporary-directory``), and deletes it when the run
ends, however it ends. A run that was killed leaves its folder behind: the next run
of any job deletes the folders whose process is gone (or whose pid now belongs to a
process started after the folder was made). Folders of runs that are still going are
never touched. The job's process names its other scratch folders the same way (the
model process's, the manifest's sorted runs spilled to disk), so they go with them.
A signal can land between the making of a folder and the set-up of its removal, so a
job's command line also deletes its process's own folders on its way out
(:func:`remove_own_folders`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["PREFIX", "run_folder", "remove_stale_folders", "remove_own_folders"]

logger = logging.getLogger(__name__)

PREFIX = "tfaural-job-"
"""Name prefix of the run folders in the system's temporary folder: ``tfaural-job-<pid>-<random>``."""

_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-")


def _started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or ``None`` if there is no such process."""
    try:
        import psutil  # installed with dask[distributed]

        return float(psutil.Process(pid).create_time())
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0  # alive, start unknown
    except Exception:  # psutil.NoSuchProcess, AccessDenied, ...
        return None


def remove_stale_folders(root: str | None = None) -> list[str]:
    """Deletes the run folders in ``root`` (default: the system's temporary folder) of runs that are over.

    A folder is stale when the process that made it no longer exists, or when its pid now
    belongs to a process that started after the folder was last changed (the pid was reused).

    Returns:
        The folders deleted.
    """
    root = root or tempfile.gettempdir()
    try:
        names = os.listdir(root)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _NAME.match(name)
        path = os.path.join(root, name)
        if not match or not os.path.isdir(path) or os.path.islink(path):
            continue
        pid = int(match.group(1))
        if pid == os.getpid():
            continue
        started = _started(pid)
        try:
            changed = os.stat(path).st_mtime
        except OSError:
            continue
        if started is None or started > changed + 1.0:
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(path)
    if removed:
        logger.info("removed %d temporary folder(s) of earlier runs that were killed: %s", len(removed),
                    ", ".join(removed))
    return removed


def remove_own_folders(root: str | None = None) -> list[str]:
    """Deletes this process's run folders in ``root`` (default: the system's temporary folder); returns them.

    For a process whose runs are over (a job's command line on its way out, however it ends): a folder whose
    removal a signal pre-empted (between ``mkdtemp`` and :func:`run_folder`'s ``try``) goes too.
    """
    root = root or tempfile.gettempdir()
    own = f"{PREFIX}{os.getpid()}-"
    try:
        names = sorted(n for n in os.listdir(root) if n.startswith(own))
    except OSError:
        return []
    removed = []
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(path)
    return removed


@contextlib.contextmanager
def run_folder(job: str) -> Iterator[str]:
    """A temporary folder for one run of ``job`` that the processes it starts use as theirs; deleted on exit.

    Sets ``TMPDIR`` (inherited by the worker processes a runner starts) and Dask's
    ``temporary-directory`` for the duration; this process's own ``tempfile`` keeps its
    folder. Stale folders of killed runs are deleted first (:func:`remove_stale_folders`).

    Args:
        job: The job's name (for the log).

    Yields:
        The folder's path.
    """
    remove_stale_folders()
    folder = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = folder
    dask_config: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if "dask" in sys.modules:  # the Dask runner imports it when the pipeline is configured
        import dask

        dask_config = dask.config.set({"temporary-directory": folder})
    logger.debug("%s: temporary folder of the run: %s", job, folder)
    try:
        with dask_config:
            yield folder
    finally:
        if previous is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous
        shutil.rmtree(folder, ignore_errors=True)
