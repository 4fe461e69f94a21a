"""How far a running catalogue job has got, from the per-track files its workers write.

A Beam runner says nothing until a pipeline ends (the DirectRunner's metrics come with its
result, and every job's manifest is written last: :mod:`beam_jobs.accounting`). Each track a
job finishes leaves a file under its own name, written atomically: ``tracks/<name>.json``
(``tag``), ``tracks/<name>.npz`` (``extract_features``), ``<name>/track.json``
(``auralise``). :class:`TrackProgress` watches those files from the launcher while the
pipeline runs and shows how many tracks are written: a progress bar (tqdm) on a terminal,
else a log line every :data:`LOG_SECONDS` (``TFAURAL_PROGRESS_SECONDS`` changes it) when
the count has moved, with the rate and the time left at that rate. Tracks that fail write no
such file: they are counted in the summary and ``manifest.jsonl`` at the end. The other jobs
count the same way: ``make_tfrecords`` its tracks from their part files (``.parts/``; its
final count is ``dataset.json``'s, as a part is deleted once copied into its shard), and
``correlation`` its deconvolutions from the maps each one stores
(:class:`beam_jobs.correlation.MapStore`).

Only a local output folder is watched: a remote runner (Dataflow, ...) has its own monitoring,
and listing a bucket every few seconds would cost requests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import IO, Any

__all__ = ["LOG_SECONDS", "PROGRESS_ENV", "TrackProgress"]

logger = logging.getLogger(__name__)

#: Seconds between the log lines of a job whose standard error is not a terminal.
LOG_SECONDS = 30.0
#: Environment variable that sets those seconds (a positive number).
PROGRESS_ENV = "TFAURAL_PROGRESS_SECONDS"
#: Seconds between two looks at the files when a bar is drawn.
BAR_SECONDS = 1.0


def _log_seconds() -> float:
    value = os.environ.get(PROGRESS_ENV, "")
    try:
        seconds = float(value)
    except ValueError:
        return LOG_SECONDS
    return seconds if seconds > 0 else LOG_SECONDS


def _duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"3.5 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class TrackProgress:
    """Counts the tracks (or other items) whose result file exists while a job runs, and shows the count.

    Use it as a context manager around the pipeline's run: a thread looks at the files
    that are still missing every second (bar) or every :data:`LOG_SECONDS` (log lines).

    Args:
        job: The job's name, for the bar and the log lines.
        paths: One local path per track: the file whose presence means the track is written.
        keep_existing: Files present at the start count as written (``--skip-existing``
            reuses them); otherwise only a file written after the start counts (with
            ``--overwrite`` an earlier run's file stays until the track is written again).
        stream: Where the bar goes (default ``sys.stderr``).
        bar: Draw a bar; ``None``: when ``stream`` is a terminal. Without a bar, log lines.
        interval: Seconds between two looks (default: 1 s with a bar, else :data:`LOG_SECONDS`
            or ``TFAURAL_PROGRESS_SECONDS``).
        unit: What one file stands for, singular (``"track"``; the correlation job's ``"deconvolution"``).
        final_count: When the pipeline has succeeded, the true count (e.g. from the job's own summary),
            for files that may be gone before a look sees them (``make_tfrecords``' part files, deleted once
            copied into their shard); ``None``: the files' count.
    """

    def __init__(self, job: str, paths: Sequence[str], *, keep_existing: bool, stream: IO[str] | None = None,
                 bar: bool | None = None, interval: float | None = None, unit: str = "track",
                 final_count: Callable[[], int] | None = None) -> None:
        self.job = job
        self.unit = unit
        self._final_count = final_count
        self.total = len(paths)
        self._stream = stream if stream is not None else sys.stderr
        self._bar_wanted = bar if bar is not None else bool(getattr(self._stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (BAR_SECONDS if self._bar_wanted else _log_seconds())
        self._started = time.perf_counter()
        self._pending = list(dict.fromkeys(paths))
        self._earlier: dict[str, int] = {}  # an earlier run's file -> its time, until it is written again
        if not keep_existing:
            for path in self._pending:
                with contextlib.suppress(OSError):
                    self._earlier[path] = os.stat(path).st_mtime_ns
        self.written = 0
        self._look()
        self._at_start = self.written
        self._logged = self.written
        self._lines = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._redirect: Any = None

    def _look(self) -> None:
        """Looks at the files still missing and counts those written since (:attr:`written`)."""
        still = []
        for path in self._pending:
            try:
                modified = os.stat(path).st_mtime_ns
            except OSError:
                still.append(path)
                continue
            if self._earlier.get(path) == modified:
                still.append(path)  # an earlier run's file, not written again yet
        self.written += len(self._pending) - len(still)
        self._pending = still

    def __enter__(self) -> TrackProgress:
        if self._bar_wanted:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=self.total, initial=self.written, desc=f"{self.job}: {self.unit}s written",
                             unit=self.unit, file=self._stream, dynamic_ncols=True)
            self._redirect = logging_redirect_tqdm()  # log lines above the bar, not through it
            self._redirect.__enter__()
        self._thread = threading.Thread(target=self._watch, name=f"{self.job}-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.update()
        if kind is None and self._final_count is not None:
            final = self._final_count()
            if self._bar is not None:
                self._bar.update(final - self.written)
            self.written = final
        if self._bar is not None:
            self._redirect.__exit__(None, None, None)
            self._bar.close()
        elif self._lines and self.written != self._logged:  # a long run that logged its progress ends on a count
            self._log()

    def _watch(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            start = time.thread_time()  # this thread's CPU time: not the wait for the GIL of a busy pipeline
            self.update()
            wait = max(self.interval, 20 * (time.thread_time() - start))  # at most 5% of a core on the looks

    def update(self) -> None:
        """Looks at the files once and shows the count (the bar; or a log line if the count moved)."""
        before = self.written
        self._look()
        if self._bar is not None:
            self._bar.update(self.written - before)
        elif self.written != self._logged and not self._stop.is_set():
            self._log()

    def _log(self) -> None:
        seconds = time.perf_counter() - self._started
        done = self.written - self._at_start
        share = 100 * self.written / max(self.total, 1)
        line = f"{self.job}: {self.written} of {self.total} {self.unit}(s) written ({share:.0f}%)"
        if done > 0 and seconds > 0:
            rate = done / seconds
            per_minute = rate * 60
            line += f", {per_minute:,.0f} per minute" if per_minute >= 100 else f", {per_minute:.3g} per minute"
            left = self.total - self.written
            if left:
                line += f"; about {_duration(left / rate)} left at that rate"
        logger.info("%s", line)
        self._logged = self.written
        self._lines += 1
