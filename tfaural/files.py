"""Writing local files so that readers never see half of one: the one atomic-write helper.

Every local file tfaural writes for others to read (audio, run directories, checkpoints, report
pages and thumbnails, caches, markers) goes through :func:`atomic_path`: the content is written to
a temporary file in the same folder, which is renamed onto the target only once complete. A reader
sees the old file or the new one, never a part; a crash leaves at most a ``.tmp-*`` file beside it.

The temporary file is created with the mode ``open()`` would give a new file (``0o666`` less the
umask), not ``tempfile.mkstemp``'s ``0o600``, which the rename would keep (pages a web server's
user cannot read, a catalogue other users cannot open). The process-wide umask is not touched
(worker threads write concurrently).

Files on remote filesystems (``gs://`` ...) written by the Beam jobs go through Beam's
``FileSystems`` instead (:mod:`beam_jobs.io`): a rename there is a copy, not this. They are
stored with the media type of their name (:func:`media_type`), so that a browser shows a report
page, plays a WAV or draws a PNG served from a bucket instead of downloading it.

This module never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import uuid
from collections.abc import Iterator

__all__ = ["atomic_path", "media_type", "write_bytes", "write_text"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[str]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds.

    The temporary file exists (empty, with the mode ``open()`` would give) when the block starts,
    so writers that replace or reopen it keep that mode. On an exception it is removed and
    ``path`` is left as it was. The parent folder is created if needed.

    Args:
        path: The file to write.
        suffix: The temporary file's ending (default: ``path``'s extension), for writers that
            choose a format by name, e.g. ``".weights.h5"`` for Keras.

    Yields:
        The temporary file's path.

    Example:
        >>> with atomic_path("out/a.npz") as tmp:  # doctest: +SKIP
        ...     np.savez(tmp, x=x)
    """
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    ending = os.path.splitext(target)[1] if suffix is None else suffix
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}{ending}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`)."""
    write_bytes(path, text.encode("utf-8"))


def media_type(path: str | os.PathLike[str]) -> str:
    """The media type a file of this name is stored with on a bucket (``"text/html"``, ``"audio/x-wav"``,
    ``"image/png"``...): ``"application/octet-stream"`` for unknown endings and compressed files."""
    kind, encoding = mimetypes.guess_type(os.fspath(path))
    return kind if kind and not encoding else "application/octet-stream"
