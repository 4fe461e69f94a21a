"""The listening report of an auralisation output on a remote filesystem (``gs://``, ``s3://``, ...).

A Beam job run on Dataflow, Flink or Spark writes its output to a bucket. Its report is written
*inside* that output, as it is for a local one (``URI/report`` by default), because the pages link
to the audio by relative paths: viewed from the bucket (e.g. ``https://storage.cloud.google.com/
BUCKET/...``, a static website of the bucket) or from a copy of the whole folder, they play it.

It is made in three steps, through Beam's filesystems (any scheme Beam knows):

1. **Stage**: every file of the output is copied, one at a time and block by block, into a
   temporary local folder of the same name, with its modification time set to the remote file's
   (the thumbnail cache keys on size and time, so a rerun reuses the thumbnails of unchanged audio).
   The report folder comes too (its thumbnails and their cache); the jobs' scratch folders
   (``.inputs/``, ...) do not. The disk holds the whole output for the duration; memory holds one
   block.
2. **Write**: :func:`tfaural.report.write_report` on the staged folder, exactly as for a local one.
3. **Publish**: the report folder's new and changed files are uploaded, each with the media type of
   its name (:func:`tfaural.files.media_type`: a browser shows the pages rather than downloading
   them; the jobs store their audio the same way), and the files of the earlier
   report that this one no longer has (pages of removed tracks) are deleted. The staged copy is
   then removed.

Never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from tfaural.errors import DataError, ParameterError
from tfaural.files import media_type

__all__ = ["inside", "plain_path", "stage", "publish", "StagedFolder"]

logger = logging.getLogger("tfaural.report")

_BLOCK = 1 << 22  # bytes per read and write while copying
_SPARE_BYTES = 1 << 28  # free disk left beside a staged copy, for the report's thumbnails and pages


def inside(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` (both URIs) if it lies inside it (``""`` for the folder itself), else None."""
    path, folder = path.rstrip("/"), folder.rstrip("/")
    if path == folder:
        return ""
    return path[len(folder) + 1:] if path.startswith(folder + "/") else None


def plain_path(relative: str) -> bool:
    """True if ``relative`` ('/'-separated) names a file below its folder: no empty, ``.`` or ``..`` part."""
    return not any(part in ("", ".", "..") for part in relative.split("/"))


def _filesystems() -> Any:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


@dataclasses.dataclass(frozen=True)
class _Remote:
    relative: str  # path below the staged folder, '/'-separated
    size: int
    mtime: float | None  # seconds since the epoch (None: the filesystem does not say)


@dataclasses.dataclass
class StagedFolder:
    """A remote folder copied to local disk.

    Attributes:
        uri: The remote folder.
        local: Its local copy (a folder of the same name inside a temporary folder).
        digests: ``{relative path: sha256}`` of every file copied, '/'-separated.
    """

    uri: str
    local: str
    digests: dict[str, str] = dataclasses.field(default_factory=dict)


def _listing(uri: str, *, what: str) -> list[_Remote]:
    filesystems = _filesystems()
    try:
        found = filesystems.match([f"{uri}/**"])[0].metadata_list
    except Exception as err:  # Beam raises BeamIOError, or the filesystem's own error (no credentials, ...)
        raise ParameterError(f"{what} {uri}: cannot be listed ({type(err).__name__}: {err})") from None
    items = []
    for meta in found:
        relative = inside(meta.path, uri)
        if not relative or relative.endswith("/"):  # the folder itself, or a "folder" object (as listed by some)
            continue
        if not plain_path(relative):  # e.g. "a/../../b": it would land outside the staged copy
            logger.warning("%s: not copied (its name is not a plain path below %s)", meta.path, uri)
            continue
        mtime = getattr(meta, "last_updated_in_seconds", None)
        items.append(_Remote(relative, int(meta.size_in_bytes), float(mtime) if mtime else None))
    # An empty object named as a folder that holds others is that folder's marker (some listings drop its "/").
    folders = {"/".join(parts[:end]) for parts in (item.relative.split("/") for item in items)
               for end in range(1, len(parts))}
    return sorted((item for item in items if not (item.size == 0 and item.relative in folders)),
                  key=lambda item: item.relative)


def _download(uri: str, target: str, *, size: int) -> str:
    """Copies the remote file ``uri`` (of ``size`` bytes) to ``target`` block by block; returns its sha256."""
    from apache_beam.io.filesystem import CompressionTypes

    digest = hashlib.sha256()
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if size == 0:  # nothing to read
            open(target, "wb").close()
            return digest.hexdigest()
        with _filesystems().open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as source, \
                open(target, "wb") as sink:
            while block := source.read(_BLOCK):
                digest.update(block)
                sink.write(block)
    except OSError as err:
        raise DataError(f"{uri}: cannot be copied to {target} ({err})") from None
    except Exception as err:  # the remote filesystem's own errors
        raise DataError(f"{uri}: cannot be read ({type(err).__name__}: {err})") from None
    return digest.hexdigest()


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def stage(uri: str, *, what: str, progress: bool = True) -> Iterator[StagedFolder]:
    """Copies the remote folder ``uri`` to a temporary local folder of the same name; removed afterwards.

    The top-level folders and files whose names start with ``.`` (the jobs' scratch folders) are left out.

    Args:
        uri: The remote folder.
        what: What it is, for messages ("auralisation output").
        progress: Show a tqdm progress bar.

    Yields:
        The :class:`StagedFolder`.

    Raises:
        ParameterError: If the folder cannot be listed, holds no files, or does not fit on the temporary
            folder's disk (``TMPDIR``) with room to spare.
        DataError: If a file cannot be copied.
    """
    from tqdm.auto import tqdm

    uri = uri.rstrip("/")
    items = [item for item in _listing(uri, what=what) if not item.relative.startswith(".")]
    if not items:
        raise ParameterError(f"{what} {uri} does not exist or holds no files")
    name = posixpath.basename(uri) or "output"
    total = sum(item.size for item in items)
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if total + _SPARE_BYTES > free:
        raise ParameterError(
            f"{what} {uri} holds {total / 1e9:.2f} GB, which is copied to this machine to write its report, but "
            f"{tempfile.gettempdir()} has {free / 1e9:.2f} GB free: set TMPDIR to a folder with room"
        )
    with tempfile.TemporaryDirectory(prefix="tfaural-report-") as scratch:
        staged = StagedFolder(uri, os.path.join(scratch, name))
        logger.info("copying %s (%d files, %.1f MB) to %s to write its report", uri, len(items), total / 1e6,
                    staged.local)
        with tqdm(total=total, desc="copying the output", unit="B", unit_scale=True, disable=not progress) as bar:
            for item in items:
                target = os.path.join(staged.local, *item.relative.split("/"))
                staged.digests[item.relative] = _download(f"{uri}/{item.relative}", target, size=item.size)
                if item.mtime is not None:
                    nanoseconds = int(round(item.mtime * 1e9))
                    os.utime(target, ns=(nanoseconds, nanoseconds))
                bar.update(item.size)
        yield staged


def publish(staged: StagedFolder, relative: str, *, progress: bool = True) -> tuple[int, int]:
    """Makes the remote folder ``staged.uri/relative`` what the local ``staged.local/relative`` holds.

    New and changed files are uploaded (each with its media type); files that were copied from
    there but are gone locally are deleted remotely; unchanged ones are left alone.

    Args:
        staged: The staged folder (its ``digests`` say what the remote files held).
        relative: The folder to publish, relative to ``staged.local`` ('/'-separated).
        progress: Show a tqdm progress bar.

    Returns:
        ``(files uploaded, files deleted)``.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from tqdm.auto import tqdm

    filesystems = _filesystems()
    root = os.path.join(staged.local, *relative.split("/"))
    local: dict[str, str] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            key = posixpath.join(relative, os.path.relpath(path, root).replace(os.sep, "/"))
            local[key] = path
    changed = [key for key, path in sorted(local.items()) if staged.digests.get(key) != _file_digest(path)]
    prefix = relative + "/"
    gone = sorted(key for key in staged.digests if key.startswith(prefix) and key not in local)
    with tqdm(total=len(changed), desc="uploading the report", unit="file", disable=not progress) as bar:
        for key in changed:
            try:
                with open(local[key], "rb") as source, filesystems.create(
                        f"{staged.uri}/{key}", mime_type=media_type(key),
                        compression_type=CompressionTypes.UNCOMPRESSED) as sink:
                    shutil.copyfileobj(source, sink, _BLOCK)
            except Exception as err:  # the remote filesystem's own errors
                raise DataError(f"{staged.uri}/{key}: cannot be written ({type(err).__name__}: {err})") from None
            bar.update(1)
    if gone:
        try:
            filesystems.delete([f"{staged.uri}/{key}" for key in gone])
        except Exception as err:  # the remote filesystem's own errors
            raise DataError(f"{staged.uri}/{relative}: the files of the earlier report that this one no longer has "
                            f"cannot be deleted ({type(err).__name__}: {err})") from None
    return len(changed), len(gone)
