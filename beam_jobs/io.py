"""Beam I/O shared by the jobs: audio through Beam filesystems, deterministic TFRecord shards, single files.

Everything here takes local paths and Beam filesystem URIs (``gs://``, ``s3://``
with the matching extra installed) alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from tfaural import audio
from tfaural.errors import AudioDecodeError, AudioError, DataError

__all__ = [
    "is_local",
    "join",
    "read_bytes",
    "read_text",
    "exists",
    "delete",
    "list_files",
    "audio_source",
    "load_audio",
    "iter_audio_blocks",
    "write_text",
    "write_bytes",
    "write_tfrecords",
    "encode_audio",
    "write_audio",
    "delete_matching",
    "shard_index",
    "ShardStats",
    "WriteShardedTFRecords",
]

logger = logging.getLogger(__name__)


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


def exists(path: str) -> bool:
    """True if ``path`` exists (local path or URI)."""
    return bool(FileSystems.exists(path))


def delete(paths: Sequence[str]) -> None:
    """Deletes the files ``paths`` that exist (missing ones are ignored)."""
    present = [p for p in paths if FileSystems.exists(p)]
    if present:
        FileSystems.delete(present)


def list_files(pattern: str) -> list[str]:
    """The files (not folders) matching the glob ``pattern``, sorted; ``[]`` when nothing matches.

    ``*`` does not cross ``/`` and ``**`` does, on local paths as on ``gs://``.
    """
    try:
        results = FileSystems.match([pattern])
    except Exception:  # BeamIOError when nothing matches on some filesystems
        return []
    paths = sorted({m.path for result in results for m in result.metadata_list})
    if any(is_local(p) for p in paths):
        paths = [p for p in paths if not is_local(p) or os.path.isfile(p)]
    return paths


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
    buffer = io.BytesIO()
    audio.write(buffer, y, sample_rate=sample_rate, format=format.upper(), normalize=normalize)
    return buffer.getvalue()


def write_audio(
    path: str, y: np.ndarray, *, sample_rate: int, format: str | None = None, normalize: bool = False
) -> str:
    """Writes a waveform (format from ``path``'s extension by default) atomically, locally or remotely.

    Returns:
        ``path``.
    """
    fmt = format or os.path.splitext(path)[1].lstrip(".") or "wav"
    return write_bytes(path, encode_audio(y, sample_rate=sample_rate, format=fmt, normalize=normalize))


def _write_atomically(path: str, chunks: Iterable[bytes], *, tfrecords: bool = False) -> int:
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    written = 0
    with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        for chunk in chunks:
            if tfrecords:
                _TFRecordUtil.write_record(handle, chunk)
            else:
                handle.write(chunk)
            written += len(chunk)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])
    return written


def delete_matching(patterns: Sequence[str]) -> list[str]:
    """Deletes the files matching glob ``patterns``; returns their paths (sorted)."""
    paths = sorted({m.path for result in FileSystems.match(list(patterns)) for m in result.metadata_list})
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
    """Writes one shard: its keys sorted, each key's records in their given order."""

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
        records = [record for _, group in groups for record in group]
        num_bytes = _write_atomically(path, records, tfrecords=True)
        self._records.inc(len(records))
        self._shards.inc()
        yield ShardStats(
            path=path,
            index=index,
            num_keys=len(groups),
            num_records=len(records),
            num_bytes=num_bytes,
            max_records_per_key=max((len(g) for _, g in groups), default=0),
        )


class WriteShardedTFRecords(beam.PTransform):
    """Writes ``(key, [serialized records])`` elements to exactly ``num_shards`` TFRecord files, deterministically.

    Unlike ``beam.io.WriteToTFRecord`` (which deals elements round-robin to
    shards in arrival order), the shard of a key is :func:`shard_index` of the key,
    keys are sorted within a shard, and a key's records are written contiguously
    in their given order. Rerunning on the same input therefore writes
    byte-identical files, and all segments of a track sit together in one shard.
    Every shard file is written, empty ones included, each through a temporary
    file renamed into place.

    A shard is assembled in the memory of one worker: choose ``num_shards`` so
    that a shard is a few hundred MB at most.

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
        keyed = pcoll | "AssignShard" >> beam.Map(lambda kv: (shard_index(kv[0], n), (kv[0], list(kv[1]))))
        every_shard = pcoll.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
        return (
            (keyed, every_shard)
            | "Merge" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self._prefix, n, self._suffix))
        )
