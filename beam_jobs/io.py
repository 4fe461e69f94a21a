"""Beam I/O shared by the jobs: audio through Beam filesystems, deterministic TFRecord shards, single files.

Everything here takes local paths and Beam filesystem URIs (``gs://``, ``s3://``
with the matching extra installed) alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import logging
import os
import re
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from tfaural import audio
from tfaural.errors import AudioDecodeError, AudioError, DataError, ParameterError
from tfaural.files import media_type

__all__ = [
    "is_local",
    "join",
    "read_bytes",
    "read_text",
    "exists",
    "delete",
    "list_files",
    "glob_regex",
    "escape",
    "glob_variants",
    "literal_prefix",
    "source_stamp",
    "audio_source",
    "load_audio",
    "iter_audio_blocks",
    "write_text",
    "write_bytes",
    "created_atomically",
    "write_tfrecords",
    "encode_audio",
    "write_audio",
    "sha256",
    "file_sha256",
    "delete_matching",
    "shard_index",
    "write_record_stream",
    "RecordFile",
    "RecordSink",
    "ShardStats",
    "WriteShardedTFRecords",
]

logger = logging.getLogger(__name__)

_COPY_BLOCK = 1 << 22
"""Bytes per read when a part file is copied into its shard."""


def is_local(path: str) -> bool:
    """True for plain local paths (no ``scheme://``)."""
    return FileSystems.get_scheme(path) is None


def join(folder: str, *names: str) -> str:
    """Joins path components with the separator of ``folder``'s filesystem."""
    return FileSystems.join(folder, *names)  # type: ignore[no-any-return]


def read_bytes(path: str) -> bytes:
    """Reads a whole file through Beam's filesystems (no decompression by extension)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()  # type: ignore[no-any-return]


def read_text(path: str) -> str:
    """Reads a whole UTF-8 text file through Beam's filesystems."""
    return read_bytes(path).decode("utf-8")


@contextlib.contextmanager
def open_text(path: str) -> Iterator[IO[str]]:
    """A UTF-8 text file opened for reading through Beam's filesystems: iterate it for its lines."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        yield io.TextIOWrapper(handle, encoding="utf-8", newline="")


def exists(path: str) -> bool:
    """True if ``path`` exists (local path or URI)."""
    return bool(FileSystems.exists(path))


def delete(paths: Sequence[str]) -> None:
    """Deletes the files ``paths`` that exist (missing ones are ignored)."""
    present = [p for p in paths if FileSystems.exists(p)]
    if present:
        FileSystems.delete(present)


def list_files(pattern: str) -> list[str]:
    """The entries (anything but folders) matching the glob ``pattern``, sorted; ``[]`` when nothing matches.

    ``*``, ``?`` and ``[...]`` stay within a name and ``**`` crosses ``/``, on local paths as on
    ``gs://`` (:func:`glob_regex`: as in the shell; Beam's own ``translate_pattern`` lets ``?`` and
    ``[!x]`` match ``/`` and ``*`` miss names with a backslash); a ``**/`` path component matches zero or more
    folders, as in ``gcloud storage``, bash's ``globstar`` and Python's ``glob``:
    ``'music/**/*.flac'`` matches ``music/a.flac`` as well as ``music/x/y/b.flac``
    (Beam alone requires at least one folder there and leaves out ``music/a.flac``).
    Braces give alternatives, as in the shell: ``'music/**/*.{mp3,flac,m4a}'``
    (see :func:`glob_variants`). Local entries that cannot be read are matched too,
    so that the caller can report them instead of losing them: broken symbolic links,
    symbolic link loops, named pipes, files without read permission (Beam's own local
    ``match`` leaves out the first two silently). A relative local pattern is matched
    from the current folder (``'*.wav'``, ``'**/*.wav'``).
    """
    if is_local(pattern):
        return _list_local(pattern)
    found: set[str] = set()
    for prefix, globs in _globs_by_prefix(pattern).items():  # one listing per prefix, however many globs share it
        regexes = [glob_regex(glob) for glob in globs if glob != prefix]
        found.update(path for glob in globs if glob == prefix for path in _matches(glob))  # no wildcard
        if regexes:
            found.update(path for path in _matches(prefix + "**") if any(regex.match(path) for regex in regexes))
    return sorted(found)


def glob_regex(glob: str) -> re.Pattern[str]:
    """The regular expression of one glob (without braces), matched against whole paths.

    As in the shell: ``*`` is any characters but ``/``, ``?`` one character but ``/``,
    ``[abc]``, ``[a-z]`` and ``[!abc]`` one character of (or not of) the set, never ``/``;
    ``[[]`` is a literal ``[`` (see :func:`escape`) and a ``[`` without its ``]`` is itself.
    ``**`` is any characters, ``/`` included (Beam's meaning; :func:`glob_variants` makes
    a ``**/`` component also match no folder).

    >>> bool(glob_regex("music/a?c.wav").match("music/a/c.wav"))
    False

    Raises:
        ParameterError: If a ``[...]`` set is not a valid one (e.g. the range ``[z-a]``).
    """
    out, i, n = [], 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "*":
            if i < n and glob[i] == "*":
                out.append(".*")
                i += 1
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1 if i < n and glob[i] == "!" else i
            j = j + 1 if j < n and glob[j] == "]" else j  # a "]" first in the set is one of its characters
            j = glob.find("]", j)
            if j < 0:
                out.append(re.escape(c))
                continue
            body, i = glob[i:j], j + 1
            negated = body.startswith("!")
            body = re.sub(r"([\\\[\]^&~|])", r"\\\1", body[1:] if negated else body)
            out.append(f"[^/{body}]" if negated else f"(?!/)[{body}]")
        else:
            out.append(re.escape(c))
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error as err:
        raise ParameterError(f"the glob {glob!r} has an invalid [...] set ({err})") from None


def escape(path: str) -> str:
    """``path`` as a glob that matches only itself: each ``*``, ``?``, ``[`` and ``{`` in a set of its own.

    >>> escape("out/[2019] live/*")
    'out/[[]2019] live/[*]'
    """
    return re.sub(r"([*?\[{])", r"[\1]", path)


def literal_prefix(glob: str) -> str:
    """The part of ``glob`` before its first wildcard (``*``, ``?``, ``[``): all of it if it has none."""
    return _WILDCARD.split(glob, maxsplit=1)[0]


def _globs_by_prefix(pattern: str) -> dict[str, list[str]]:
    """The Beam globs of ``pattern`` (:func:`glob_variants`) by their :func:`literal_prefix`."""
    groups: dict[str, list[str]] = {}
    for variant in glob_variants(pattern):
        groups.setdefault(literal_prefix(variant), []).append(variant)
    return groups


def _matches(pattern: str) -> list[str]:
    """What Beam's ``FileSystems.match`` finds for one glob; ``[]`` if it fails (when nothing matches, on some)."""
    try:
        return [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list]
    except Exception:  # BeamIOError
        return []


_WILDCARD = re.compile(r"[*?\[]")
_GLOBSTAR = re.compile(r"(?:(?<=/)|^)\*\*/")
_BRACES = re.compile(r"(?<!\[)\{(?!\])([^{}]*,[^{}]*)\}")  # innermost first; "[{]" is a literal "{" (escape)
MAX_GLOB_VARIANTS = 256


def glob_variants(pattern: str) -> list[str]:
    """The Beam globs that together match ``pattern``: its brace alternatives, with ``**/`` as zero or more folders.

    * ``{a,b,...}`` (with at least one comma) gives one glob per alternative, as bash's
      brace expansion does: ``'*.{mp3,flac}'`` → ``'*.mp3'``, ``'*.flac'``. Braces
      without a comma are literal characters.
    * Beam translates ``**`` to "any characters", so its ``'a/**/b'`` needs at least
      one folder between ``a/`` and ``b``. Each ``**/`` that is a whole path component
      is kept in one variant (one or more folders) and dropped in another (none);
      ``**`` elsewhere (``'a/**'``, ``'a/x**/b'``) keeps Beam's meaning.

    >>> glob_variants("music/**/*.flac")
    ['music/**/*.flac', 'music/*.flac']

    Raises:
        ParameterError: If the braces and ``**/`` give more than :data:`MAX_GLOB_VARIANTS` globs.
    """
    expanded, pending = [], [pattern]
    while pending:  # one brace of each glob per round, the innermost first
        expanded += [glob for glob in pending if _BRACES.search(glob) is None]
        pending = [glob[: m.start()] + choice + glob[m.end() :] for glob in pending
                   if (m := _BRACES.search(glob)) is not None for choice in m.group(1).split(",")]
        if len(expanded) + len(pending) > MAX_GLOB_VARIANTS:
            raise ParameterError(f"the glob {pattern!r} has more than {MAX_GLOB_VARIANTS} brace alternatives; "
                                 "list the files in a --manifest instead")
    variants: list[str] = []
    for glob in expanded:
        parts = _GLOBSTAR.split(glob)
        globs = [parts[0]]
        for part in parts[1:]:
            globs = list(dict.fromkeys([g + "**/" + part for g in globs] + [g + part for g in globs]))
        variants = list(dict.fromkeys(variants + globs))
        if len(variants) > MAX_GLOB_VARIANTS:
            raise ParameterError(f"the glob {pattern!r} stands for more than {MAX_GLOB_VARIANTS} globs (each '**/' "
                                 "doubles them); list the files in a --manifest instead")
    return variants


def _list_local(pattern: str) -> list[str]:
    if pattern.endswith(("/", os.sep)):
        pattern += "*"
    found: set[str] = set()
    walks: dict[str, list[re.Pattern[str]]] = {}  # folder to walk → the globs matched below it
    for prefix, globs in _globs_by_prefix(pattern).items():
        for glob in globs:
            if glob == prefix:  # no wildcard: the path itself
                if os.path.lexists(glob) and not os.path.isdir(glob):
                    found.add(glob)
                continue
            folder = prefix if prefix.endswith("/") else os.path.dirname(prefix)
            walks.setdefault(folder, []).append(glob_regex(glob))
    for folder, regexes in walks.items():
        for dirpath, _dirnames, filenames in os.walk(folder or os.curdir):  # links to folders are not followed
            for name in filenames:
                path = os.path.join(dirpath, name)
                candidate = path if folder else os.path.relpath(path)
                if any(regex.match(candidate) for regex in regexes):
                    found.add(candidate)
    return sorted(found)


def source_stamp(path: str) -> str | None:
    """What tells whether the file ``path`` changed, without reading it: its size and modification time.

    A result kept by ``--skip-existing`` must have been made from the file as it is now: each job
    records the stamp of a track's file as it starts to decode it, and compares it on a rerun (as
    ``make`` and ``rsync`` compare size and time; hashing every input again would read the whole
    catalogue). A local file is stat'ed through symbolic links (its content), to the nanosecond; a
    remote one gives its object's size and last-update time.

    Returns:
        ``"<bytes> bytes, modified <seconds since the epoch>"``, or ``None`` if the file cannot be stat'ed.
    """
    if is_local(path):
        try:
            info = os.stat(path)
        except OSError:
            return None
        seconds, nanoseconds = divmod(info.st_mtime_ns, 10**9)
        return f"{info.st_size} bytes, modified {seconds}.{nanoseconds:09d}"
    try:  # the object itself (a match would read the brackets of a name such as "[2019] live.flac" as a set)
        found = FileSystems.get_filesystem(path).metadata(path)
    except Exception:  # BeamIOError, or a filesystem client's own error
        return None
    return f"{found.size_in_bytes} bytes, modified {found.last_updated_in_seconds:.6f}"


def audio_source(path: str) -> str | io.BytesIO:
    """What to hand to :func:`tfaural.audio.load` for ``path``.

    Local paths are passed through (soundfile reads them directly). Remote files
    are read into memory through Beam's filesystems and returned as a
    ``BytesIO`` whose ``name`` is the URI, so error messages name the file.

    Raises:
        AudioDecodeError: If a remote file cannot be opened or read.
    """
    if is_local(path):
        return path
    try:
        data = read_bytes(path)
    except Exception as err:  # BeamIOError, OSError, auth errors of the filesystem client
        raise AudioDecodeError(path, f"cannot read the file ({type(err).__name__}: {err})") from None
    buffer = io.BytesIO(data)
    buffer.name = path
    return buffer


def load_audio(
    path: str,
    *,
    sample_rate: int | None,
    mono: bool = True,
    min_samples: int = 1,
    offset: float = 0.0,
    duration: float | None = None,
) -> tuple[np.ndarray, int]:
    """:func:`tfaural.audio.load` for a local path or a Beam filesystem URI.

    With ``offset``/``duration`` only that excerpt is decoded: local files are
    seeked by libsndfile, remote files are read through a seekable Beam
    filesystem stream, so a 1-hour file is never held in memory for a 4-s clip.

    Args:
        path: Local path or URI.
        sample_rate: Target rate in Hz (``None``: native).
        mono: Mix down to one channel.
        min_samples: Fewest samples after resampling.
        offset: Start this many seconds into the file.
        duration: Read at most this many seconds (``None``: to the end).

    Returns:
        ``(y, sr)`` as :func:`tfaural.audio.load`.

    Raises:
        AudioError: As :func:`tfaural.audio.load`, naming ``path``.
    """
    if is_local(path) or (offset == 0 and duration is None):
        return audio.load(audio_source(path), sample_rate=sample_rate, mono=mono, min_samples=min_samples,
                          offset=offset, duration=duration)
    try:
        handle = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as err:  # BeamIOError, OSError, auth errors of the filesystem client
        raise AudioDecodeError(path, f"cannot read the file ({type(err).__name__}: {err})") from None
    with handle:
        try:
            return audio.load(handle, sample_rate=sample_rate, mono=mono, min_samples=min_samples, offset=offset,
                              duration=duration)
        except AudioError as err:
            raise type(err)(path, err.reason) from None


def iter_audio_blocks(path: str, *, sample_rate: int | None, block_seconds: float) -> Iterator[np.ndarray]:
    """:func:`tfaural.audio.iter_blocks` (mono) for a local path or a Beam filesystem URI.

    The file is decoded and resampled block by block: a local file is read by
    libsndfile, a remote one through a seekable Beam filesystem stream, so neither
    the encoded nor the decoded file is ever held in memory as a whole.

    Args:
        path: Local path or URI.
        sample_rate: Target rate in Hz (``None``: native).
        block_seconds: Length of every block but the last, in seconds at the output rate.

    Yields:
        float32 ``[samples]`` blocks, mono.

    Raises:
        AudioError: As :func:`tfaural.audio.iter_blocks` (possibly after some blocks
            were yielded: a file that is truncated or corrupt halfway), naming ``path``.
    """
    if is_local(path):
        yield from audio.iter_blocks(path, sample_rate=sample_rate, block_seconds=block_seconds)
        return
    try:
        handle = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as err:  # BeamIOError, OSError, auth errors of the filesystem client
        raise AudioDecodeError(path, f"cannot read the file ({type(err).__name__}: {err})") from None
    with handle:
        try:
            yield from audio.iter_blocks(handle, sample_rate=sample_rate, block_seconds=block_seconds)
        except AudioError as err:
            raise type(err)(path, err.reason) from None


def write_text(path: str, text: str) -> str:
    """Writes a UTF-8 text file through Beam's filesystems, replacing it atomically where the filesystem can.

    The text goes to a temporary sibling first and is renamed over ``path``, so a
    reader never sees a half-written file.

    Returns:
        ``path``.
    """
    _write_atomically(path, [text.encode("utf-8")])
    return path


def write_bytes(path: str, data: bytes) -> str:
    """Writes ``data`` to ``path`` through Beam's filesystems, atomically where the filesystem can.

    Returns:
        ``path``.
    """
    _write_atomically(path, [data])
    return path


def write_tfrecords(path: str, records: Iterable[bytes]) -> int:
    """Writes serialised records as one uncompressed TFRecord file (atomically); returns the payload bytes."""
    return _write_atomically(path, records, tfrecords=True)


def encode_audio(y: np.ndarray, *, sample_rate: int, format: str = "wav", normalize: bool = False) -> bytes:
    """Encodes a waveform as a 16-bit WAV or FLAC file in memory.

    Args:
        y: float32 ``[samples]`` in [-1, 1].
        sample_rate: Sample rate in Hz.
        format: ``"wav"`` or ``"flac"`` (any container :func:`tfaural.audio.write` knows).
        normalize: Scale the peak to just below full scale (silence stays silence).

    Returns:
        The file's bytes.

    Raises:
        InvalidAudioError: NaN/Inf samples, or a peak above 1.0 without ``normalize``.
    """
    return audio.encode(y, sample_rate=sample_rate, format=format, normalize=normalize)


def write_audio(
    path: str, y: np.ndarray, *, sample_rate: int, format: str | None = None, normalize: bool = False
) -> str:
    """Writes a waveform (format from ``path``'s extension by default) atomically, locally or remotely.

    Returns:
        The SHA-256 (hex) of the file written.
    """
    fmt = format or os.path.splitext(path)[1].lstrip(".") or "wav"
    data = encode_audio(y, sample_rate=sample_rate, format=fmt, normalize=normalize)
    write_bytes(path, data)
    return sha256(data)


def sha256(data: bytes) -> str:
    """The SHA-256 of ``data``, as 64 hex digits (what jobs record to check reused files)."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str) -> str:
    """The SHA-256 of the file ``path`` (local or URI), as 64 hex digits, read in 1-MiB blocks."""
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temporary_sibling(path: str) -> str:
    """A fresh temporary name beside ``path`` (local or URI): ``PATH.tmp-<uuid>``."""
    return f"{path}.tmp-{uuid.uuid4().hex}"


def replace_with(temporary: str, path: str) -> None:
    """Moves the finished ``temporary`` onto ``path`` (Beam's filesystems: a rename locally, a copy on GCS)."""
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


def discard(temporary: str) -> None:
    """Removes an unfinished temporary file if it is there (best effort: the job reports the original error)."""
    try:
        if FileSystems.exists(temporary):
            FileSystems.delete([temporary])
    except Exception:
        logger.warning("could not remove the temporary file %s", temporary)


@contextlib.contextmanager
def created_atomically(path: str) -> Iterator[Any]:
    """A writable handle whose content appears at ``path`` (local or URI) only when the block succeeds.

    The Beam jobs' one atomic write: through a temporary sibling and a rename with Beam's
    ``FileSystems``, so that it works on every filesystem a runner reaches (local files written
    outside Beam use :func:`tfaural.files.atomic_path`). On an exception the temporary file is
    removed and ``path`` is left as it was.
    """
    temporary = temporary_sibling(path)
    try:
        with FileSystems.create(temporary, mime_type=media_type(path),
                                compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            yield handle
        replace_with(temporary, path)
    except BaseException:
        discard(temporary)
        raise


def _write_atomically(path: str, chunks: Iterable[bytes], *, tfrecords: bool = False) -> int:
    written = 0
    with created_atomically(path) as handle:
        for chunk in chunks:
            if tfrecords:
                _TFRecordUtil.write_record(handle, chunk)
            else:
                handle.write(chunk)
            written += len(chunk)
    return written


def _masked_crc32c(crc: int) -> int:
    """The TFRecord mask of a CRC-32C (as ``_TFRecordUtil._masked_crc32c``)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_record_stream(handle: Any, length: int, chunks: Iterable[bytes]) -> int:
    """Writes one TFRecord whose payload arrives in pieces (never held whole); returns ``length``.

    The bytes are those :meth:`_TFRecordUtil.write_record` writes for the joined payload:
    length, masked CRC-32C of the length, the payload, masked CRC-32C of the payload
    (computed as it streams).

    Raises:
        DataError: If the pieces do not add up to ``length`` bytes.
    """
    import google_crc32c

    encoded_length = struct.pack("<Q", length)
    handle.write(encoded_length + struct.pack("<I", _masked_crc32c(google_crc32c.value(encoded_length))))
    crc, written = 0, 0
    for chunk in chunks:
        handle.write(chunk)
        crc = google_crc32c.extend(crc, chunk)
        written += len(chunk)
    if written != length:
        raise DataError(f"a streamed record has {written} bytes, not the {length} announced")
    handle.write(struct.pack("<I", _masked_crc32c(crc)))
    return length


@dataclasses.dataclass(frozen=True)
class RecordFile:
    """Records of one key written to a file of their own (a part), to be copied into the key's shard.

    A key whose records are too large to travel through the pipeline in memory (a long track)
    goes to :class:`WriteShardedTFRecords` as a ``RecordFile`` instead of a list of records;
    the shard writer copies the file in blocks, then deletes it.

    Attributes:
        path: The part file: framed TFRecords, as they go into the shard.
        num_records: Records in it.
        num_bytes: Their payload bytes (without framing).
    """

    path: str
    num_records: int
    num_bytes: int


class RecordSink:
    """Collects the serialised records of one key in memory, or in a part file once they exceed ``spill_bytes``.

    Args:
        part_path: Where the records go if they do not fit (a file of the output folder, which every worker
            can read: local or URI).
        spill_bytes: Most payload bytes kept in memory.
    """

    def __init__(self, part_path: str, *, spill_bytes: int) -> None:
        self._path = part_path
        self._temporary = temporary_sibling(part_path)
        self._spill_bytes = spill_bytes
        self._records: list[bytes] = []
        self._handle: Any = None
        self.num_records = 0
        self.num_bytes = 0

    def _open(self) -> Any:
        if self._handle is None:
            self._handle = FileSystems.create(self._temporary, compression_type=CompressionTypes.UNCOMPRESSED)
            for record in self._records:
                _TFRecordUtil.write_record(self._handle, record)
            self._records = []
        return self._handle

    def add(self, record: bytes) -> None:
        """Adds one serialised record."""
        self.num_records += 1
        self.num_bytes += len(record)
        if self._handle is None and self.num_bytes <= self._spill_bytes:
            self._records.append(record)
        else:
            _TFRecordUtil.write_record(self._open(), record)

    def add_stream(self, length: int, chunks: Iterable[bytes]) -> None:
        """Adds one record of ``length`` payload bytes given in pieces (written to the part file as they come)."""
        if self._handle is None and self.num_bytes + length <= self._spill_bytes:
            self.add(b"".join(chunks))
            return
        self.num_records += 1
        self.num_bytes += length
        write_record_stream(self._open(), length, chunks)

    def finish(self) -> tuple[bytes, ...] | RecordFile:
        """The records in memory, or the finished part file."""
        if self._handle is None:
            return tuple(self._records)
        self._handle.close()
        self._handle = None
        replace_with(self._temporary, self._path)
        return RecordFile(self._path, self.num_records, self.num_bytes)

    def abort(self) -> None:
        """Discards everything (the part file too)."""
        self._records = []
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        delete([self._temporary])


def remove_folder(folder: str, *, recursive: bool = False) -> int:
    """Deletes the files directly in ``folder`` (``recursive``: at any depth) and, on a local filesystem, the
    folder (and its subfolders) if then empty (on object stores a folder is only a prefix); returns how many files
    were deleted. A missing folder is fine."""
    stale = list_files(join(escape(folder), "**" if recursive else "*"))
    if stale:
        delete(stale)
    if is_local(folder):
        inner = [os.path.join(top, name) for top, names, _ in os.walk(folder, topdown=False) for name in names
                 ] if recursive else []
        for path in [*inner, folder]:
            with contextlib.suppress(OSError):  # absent, or not empty
                os.rmdir(path)
    return len(stale)


def delete_matching(patterns: Sequence[str]) -> list[str]:
    """Deletes the files matching glob ``patterns`` (:func:`list_files`); returns their paths (sorted)."""
    paths = sorted({path for pattern in patterns for path in list_files(pattern)})
    if paths:
        FileSystems.delete(paths)
    return paths


def shard_index(key: str, num_shards: int) -> int:
    """The shard of ``key``: SHA-1 of its UTF-8 bytes modulo ``num_shards`` (stable across processes and runs)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % num_shards


@dataclasses.dataclass(frozen=True)
class ShardStats:
    """What one shard holds.

    Attributes:
        path: The shard file.
        index: Shard index.
        num_keys: Number of keys (tracks) in it.
        num_records: Number of records in it.
        num_bytes: Bytes of record payload (without TFRecord framing).
        max_records_per_key: Most records of one key (0 for an empty shard).
    """

    path: str
    index: int
    num_keys: int
    num_records: int
    num_bytes: int
    max_records_per_key: int


class _WriteShard(beam.DoFn):
    """Writes one shard: its keys sorted, each key's records in their given order (copied from its
    :class:`RecordFile` if it has one, which is deleted once the shard is in place)."""

    def __init__(self, file_prefix: str, num_shards: int, suffix: str) -> None:
        self._prefix = file_prefix
        self._num_shards = num_shards
        self._suffix = suffix
        self._records = beam.metrics.Metrics.counter("tfrecords", "records_written")
        self._shards = beam.metrics.Metrics.counter("tfrecords", "shards_written")

    def process(self, element: tuple[int, Iterable[Any]]) -> Iterator[ShardStats]:
        index, values = element
        groups = sorted((v for v in values if v is not None), key=lambda kv: kv[0])
        keys = [k for k, _ in groups]
        duplicates = sorted({k for k, n in itertools.pairwise(keys) if k == n})
        if duplicates:
            raise DataError(f"shard {index}: key(s) {duplicates[:5]} were given more than once; keys must be unique")
        path = f"{self._prefix}-{index:05d}-of-{self._num_shards:05d}{self._suffix}"
        counts = [g.num_records if isinstance(g, RecordFile) else len(g) for _, g in groups]
        num_bytes = _write_shard(path, [g for _, g in groups])
        delete([g.path for _, g in groups if isinstance(g, RecordFile)])
        self._records.inc(sum(counts))
        self._shards.inc()
        yield ShardStats(
            path=path,
            index=index,
            num_keys=len(groups),
            num_records=sum(counts),
            num_bytes=num_bytes,
            max_records_per_key=max(counts, default=0),
        )


def _write_shard(path: str, groups: Sequence[Sequence[bytes] | RecordFile]) -> int:
    """Writes the groups' records in order through a temporary file; returns the payload bytes."""
    written = 0
    with created_atomically(path) as handle:
        for group in groups:
            if isinstance(group, RecordFile):
                with FileSystems.open(group.path, compression_type=CompressionTypes.UNCOMPRESSED) as part:
                    for block in iter(lambda: part.read(_COPY_BLOCK), b""):
                        handle.write(block)
                written += group.num_bytes
            else:
                for record in group:
                    _TFRecordUtil.write_record(handle, record)
                    written += len(record)
    return written


class WriteShardedTFRecords(beam.PTransform):
    """Writes ``(key, [serialized records] or RecordFile)`` elements to exactly ``num_shards`` TFRecord files,
    deterministically.

    Unlike ``beam.io.WriteToTFRecord`` (which deals elements round-robin to
    shards in arrival order), the shard of a key is :func:`shard_index` of the key,
    keys are sorted within a shard, and a key's records are written contiguously
    in their given order. Rerunning on the same input therefore writes
    byte-identical files, and all segments of a track sit together in one shard.
    Every shard file is written, empty ones included, each through a temporary
    file renamed into place.

    The records given in memory are assembled in the memory of one worker: choose
    ``num_shards`` so that those of a shard are a few hundred MB at most. Keys given as a
    :class:`RecordFile` are copied block by block (and their part files deleted), so a key
    of any size takes no memory.

    Output: a PCollection of :class:`ShardStats`, one per shard.
    """

    def __init__(self, file_prefix: str, *, num_shards: int, suffix: str = ".tfrecord") -> None:
        super().__init__()
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
            raise DataError(f"num_shards={num_shards!r} is invalid: expected a positive integer")
        self._prefix = file_prefix
        self._num_shards = num_shards
        self._suffix = suffix

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        n = self._num_shards
        keyed = pcoll | "AssignShard" >> beam.Map(
            lambda kv: (shard_index(kv[0], n), (kv[0], kv[1] if isinstance(kv[1], RecordFile) else list(kv[1]))))
        every_shard = pcoll.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
        return (
            (keyed, every_shard)
            | "Merge" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self._prefix, n, self._suffix))
        )
