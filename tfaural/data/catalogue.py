"""Catalogue manifests: the one way a dataset of audio files with labels is described.

A manifest is a CSV (or TSV) file with a header row, or a JSON Lines file with one
object per line. Its fields:

==========  ========  ==========================================================
field       required  meaning
==========  ========  ==========================================================
path        yes       The audio file. Relative paths are relative to the folder
                      of the manifest; absolute paths and URIs (``gs://...``)
                      are used as they are.
track_id    no        A unique id, safe to use in file names (see
                      :func:`validate_track_id`). Default: derived from the
                      path by :func:`default_track_ids`.
labels      yes [1]_  One or several tags, or a genre. In CSV a cell holds the
                      labels separated by ``;`` (``|`` is accepted too), e.g.
                      ``guitar;slow``. In JSON Lines either a list of strings
                      or one string parsed like a CSV cell.
split       no        ``train``, ``validation`` or ``test`` (empty: no split).
==========  ========  ==========================================================

.. [1] Unless ``require_labels=False`` (e.g. a catalogue to run inference on).

Other columns are ignored. Labels may not contain ``;`` or ``|`` (in any format,
so that every catalogue can be written back as CSV). Example CSV::

    path,labels,split
    rock/track 01.wav,rock,train
    /data/jazz/take5.flac,jazz;saxophone,test

Default track ids are the path as written in the manifest without its extension,
in Unicode normal form NFC, with every run of characters other than letters and
digits (of any script), ``.``, ``_`` and ``-`` (per ``/``-separated component)
replaced by ``_``: ``rock/track 01.wav`` becomes ``rock/track_01``, and
``Кино/Группа крови.mp3`` becomes ``Кино/Группа_крови``. When two
paths give the same id (``a.wav`` and ``a.mp3``, or ``a b.wav`` and ``a_b.wav``)
each of them gets ``-`` and the first 8 hex digits of the SHA-1 of its path
appended (``a-3f2c9e1b``). Ids are therefore stable for a given manifest, but
adding a colliding file changes the ids of the files it collides with; give
explicit ids when that matters.

The label vocabulary (the order of the multi-hot vector) is the sorted set of
labels in the manifest unless an explicit ``label_names`` is given.

Readers for two public datasets build the same :class:`Catalogue`:
:func:`read_magnatagatune` (``annotations_final.csv``, top-50 tags, split by
directory as in the SampleCNN recipe) and :func:`read_gtzan` (genre folders and
the artist-filtered split lists).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

import numpy as np

from tfaural import ffmpeg_audio
from tfaural.errors import DataError
from tfaural.formats import json_lines

__all__ = [
    "SPLITS",
    "SPLIT_ALIASES",
    "LABEL_SEPARATOR",
    "AUDIO_EXTENSIONS",
    "MAX_TRACK_ID_LENGTH",
    "MTAT_TOP50_TAGS",
    "GTZAN_GENRES",
    "Track",
    "Catalogue",
    "read_manifest",
    "write_manifest",
    "manifest_from_folder",
    "read_magnatagatune",
    "read_gtzan",
    "default_track_ids",
    "MAX_NAME_LENGTH",
    "output_names",
    "sanitize_track_id",
    "validate_track_id",
    "parse_labels",
    "is_uri",
    "resolve_path",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
"""The split names a manifest may use (empty means no split)."""

LABEL_SEPARATOR = ";"
"""Separator of several labels in a CSV cell (``|`` is accepted when reading)."""

_LABEL_SEPARATORS = re.compile(r"[;|]")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".mp2", ".au", ".aiff", ".aif", ".aifc", ".opus", ".w64",
                    ".rf64", *ffmpeg_audio.EXTENSIONS)
"""File extensions :func:`manifest_from_folder` picks up (case-insensitive): libsndfile's, then FFmpeg's (M4A, ...)."""

MAX_TRACK_ID_LENGTH = 200
"""Longest track id, in characters (ids become parts of output file names)."""

MTAT_TOP50_TAGS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
    "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop",
    "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice",
    "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip
"""The 50 most frequent MagnaTagATune tags, most frequent first, in the order used by
musicnn and most published tagging results (ties in the counts are ordered as there)."""

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
"""The ten GTZAN genres (the folder names of the dataset)."""

_MTAT_SPLIT_DIRS = {**{d: "train" for d in "0123456789ab"}, "c": "validation", **{d: "test" for d in "def"}}

# Letters and digits of any script (str.isalnum) and "_": \w of Python's Unicode patterns.
_ID_COMPONENT = re.compile(r"\w[\w.-]*")
_UNSAFE_CHARS = re.compile(r"[^\w.-]+")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


# ---------------------------------------------------------------------------
# Paths and ids
# ---------------------------------------------------------------------------


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` paths (``gs://``, ``s3://``, ...), which are never resolved locally."""
    return bool(_URI.match(path))


def resolve_path(path: str, *, base: str) -> str:
    """Resolves a manifest path against the manifest's folder.

    Args:
        path: The path as written in the manifest.
        base: The folder of the manifest (a local folder or a URI).

    Returns:
        ``path`` unchanged if it is absolute or a URI, otherwise ``base/path``
        (normalised; ``posixpath`` for URIs).
    """
    if is_uri(path) or os.path.isabs(path):
        return path
    if is_uri(base):
        return posixpath.normpath(posixpath.join(base, path)).replace(":/", "://", 1)
    return os.path.normpath(os.path.join(base, path))


def validate_track_id(track_id: str, *, where: str = "") -> str:
    """Checks that ``track_id`` is safe to use as (part of) an output file name.

    A safe id is one or more ``/``-separated components, each starting with a
    letter, digit (of any script) or ``_`` followed by letters, digits, ``.``, ``_``
    or ``-``; at most :data:`MAX_TRACK_ID_LENGTH` characters.

    Args:
        track_id: The id to check.
        where: Context for the error message (e.g. ``"manifest.csv line 3"``).

    Returns:
        ``track_id``.

    Raises:
        DataError: If the id is not a non-empty safe string.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(track_id, str) or not track_id:
        raise DataError(f"{prefix}track_id {track_id!r} is invalid: expected a non-empty string")
    if len(track_id) > MAX_TRACK_ID_LENGTH:
        raise DataError(f"{prefix}track_id {track_id[:40]!r}... is {len(track_id)} characters long; "
                        f"expected at most {MAX_TRACK_ID_LENGTH}")
    if not all(_ID_COMPONENT.fullmatch(part) for part in track_id.split("/")):
        raise DataError(
            f"{prefix}track_id {track_id!r} is not safe to use in file names: expected '/'-separated parts made of "
            "letters, digits, '.', '_' and '-', each starting with a letter, digit or '_' "
            f"(e.g. {sanitize_track_id(track_id)!r}), or leave track_id empty to derive one from the path"
        )
    return track_id


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def sanitize_track_id(text: str) -> str:
    """Turns any string (typically a path without extension) into a safe track id.

    Backslashes become ``/``; empty, ``.`` and ``..`` components are dropped;
    each component is put in Unicode normal form NFC (macOS writes accented file
    names decomposed) and runs of unsafe characters become ``_``; a leading ``.``
    or ``-`` becomes ``_``. Ids longer than :data:`MAX_TRACK_ID_LENGTH` are cut and suffixed with a
    hash of ``text``.

    Args:
        text: Any string.

    Returns:
        A string that passes :func:`validate_track_id`.
    """
    parts = []
    for part in text.replace("\\", "/").split("/"):
        if part in ("", ".", ".."):
            continue
        part = _UNSAFE_CHARS.sub("_", unicodedata.normalize("NFC", part))
        if part[0] in ".-":
            part = "_" + part[1:]
        parts.append(part)
    out = "/".join(parts) or "_"
    if len(out) > MAX_TRACK_ID_LENGTH:
        out = out[: MAX_TRACK_ID_LENGTH - 9].rstrip("/") + "-" + _short_hash(text)
    return out


def _strip_extension_and_scheme(path: str) -> str:
    path = _URI.sub("", path.replace("\\", "/"))
    stem, ext = posixpath.splitext(path)
    return stem if ext and "/" not in ext else path


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or bool(_URI.match(path)) or bool(_DRIVE.match(path))


def _common_folder(stems: Sequence[str]) -> str:
    """The longest folder (``a/b/``) that holds every one of ``stems`` ('/'-separated), or ``""``."""
    folders = [stem.split("/")[:-1] for stem in stems]
    common: list[str] = []
    for parts in zip(*folders):
        if any(part != parts[0] for part in parts):
            break
        common.append(parts[0])
    return "/".join(common) + "/" if common else ""


def default_track_ids(paths: Sequence[str]) -> list[str]:
    """Derives a stable, unique, file-name-safe id for each path.

    When every path is absolute (or a URI), the ids are relative to the folder that holds
    them all: a manifest of ``/data/music/in/a.wav`` and ``/data/music/in/b/c.wav`` gives
    ``a`` and ``b/c``, as a glob over ``/data/music/in`` would, and as relative paths in a
    manifest beside the audio do.

    Args:
        paths: Paths as written in the manifest (relative, absolute or URIs).

    Returns:
        One id per path: :func:`sanitize_track_id` of the path without its
        extension (and URI scheme, and the common folder of absolute paths); ids that
        would collide get ``-`` and the first 8 hex digits of the SHA-1 of their full
        path appended.
    """
    stems = [_strip_extension_and_scheme(p) for p in paths]
    if stems and all(_is_absolute(p) for p in paths):
        folder = _common_folder(stems)
        stems = [stem[len(folder):] for stem in stems]
    ids = [sanitize_track_id(stem) for stem in stems]
    counts = collections.Counter(ids)
    out = []
    for path, track_id in zip(paths, ids):
        if counts[track_id] > 1:
            stem = track_id[: MAX_TRACK_ID_LENGTH - 9]
            track_id = f"{stem}-{_short_hash(path.replace(chr(92), '/'))}"
        out.append(track_id)
    return out


MAX_NAME_LENGTH = 150
"""Longest output name in UTF-8 bytes (a file or folder name; file systems allow 255 bytes, and a job
appends suffixes such as ``.json``)."""


def _name_of(track_id: str) -> str:
    return track_id.replace("/", "__")


def _utf8_prefix(text: str, size: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding takes at most ``size`` bytes."""
    return text.encode()[:size].decode(errors="ignore")


def output_names(track_ids: Sequence[str], *, reserved: Iterable[str] = ()) -> list[str]:
    """One output name per track id: a single safe path component, unique case-insensitively.

    The name is the id with ``/`` replaced by ``__``. Names longer than
    :data:`MAX_NAME_LENGTH` bytes (cut there), names equal to a ``reserved`` name (the job's own
    files such as ``manifest.jsonl``) and names shared by several ids (``a/b`` and
    ``a__b``; ``Song`` and ``song``) get ``-`` and 8 hex digits of the SHA-1 of the
    id appended. The result depends only on the set of ids.

    Args:
        track_ids: Valid track ids (unique).
        reserved: Names the outputs must not take (compared case-insensitively).

    Returns:
        The names, in the order of ``track_ids``.
    """
    taboo = {name.casefold() for name in reserved}
    names = [_name_of(track_id) for track_id in track_ids]
    counts = collections.Counter(name.casefold() for name in names)
    out = []
    for track_id, name in zip(track_ids, names):
        if counts[name.casefold()] > 1 or name.casefold() in taboo or len(name.encode()) > MAX_NAME_LENGTH:
            name = f"{_utf8_prefix(name, MAX_NAME_LENGTH - 9)}-{_short_hash(track_id)}"
        out.append(name)
    return out


def parse_labels(value: Any, *, where: str = "") -> tuple[str, ...]:
    """Parses a labels field: a ``;``/``|``-separated string or a list of strings.

    Args:
        value: ``None``, a string (CSV cell) or a list of strings (JSON).
        where: Context for the error message.

    Returns:
        The labels, stripped, without empties and duplicates, in their order.

    Raises:
        DataError: If ``value`` has the wrong type or a label contains a separator.
    """
    prefix = f"{where}: " if where else ""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = _LABEL_SEPARATORS.split(value)
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise DataError(f"{prefix}labels {value!r} are invalid: expected a string or a list of strings")
    labels: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise DataError(f"{prefix}label {item!r} is invalid: expected a string")
        label = item.strip()
        if _LABEL_SEPARATORS.search(label):
            raise DataError(f"{prefix}label {label!r} contains ';' or '|', which separate labels")
        if label and label not in labels:
            labels.append(label)
    return tuple(labels)


# ---------------------------------------------------------------------------
# Data classes
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Track:
    """One audio file of a catalogue.

    Attributes:
        path: The audio file: an absolute local path or a URI (``gs://...``).
        track_id: Unique, file-name-safe id (see :func:`validate_track_id`).
        labels: The track's labels (tags or a genre), each in the catalogue's
            ``label_names``.
        split: ``"train"``, ``"validation"``, ``"test"`` or ``None``.
    """

    path: str
    track_id: str
    labels: tuple[str, ...] = ()
    split: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise DataError(f"track {self.track_id!r}: path {self.path!r} is invalid: expected a non-empty string")
        validate_track_id(self.track_id)
        object.__setattr__(self, "labels", parse_labels(self.labels, where=f"track {self.track_id!r}"))


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """A validated set of tracks with a label vocabulary.

    Attributes:
        tracks: The tracks, in manifest order; ids are unique.
        label_names: The label vocabulary; index ``i`` of a multi-hot vector is
            ``label_names[i]``. Every track label is in it.
        source: Where the catalogue came from (a manifest path), for messages.
    """

    tracks: tuple[Track, ...]
    label_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tracks", tuple(self.tracks))
        object.__setattr__(self, "label_names", tuple(self.label_names))
        where = self.source or "catalogue"
        duplicates = sorted(n for n, c in collections.Counter(self.label_names).items() if c > 1)
        if duplicates:
            raise DataError(f"{where}: label_names has duplicates {duplicates}")
        duplicates = sorted(i for i, c in collections.Counter(t.track_id for t in self.tracks).items() if c > 1)
        if duplicates:
            raise DataError(f"{where}: duplicate track_id(s) {duplicates[:10]}"
                            f"{' ...' if len(duplicates) > 10 else ''}; every track needs a unique id")
        vocabulary = set(self.label_names)
        unknown = sorted({label for t in self.tracks for label in t.labels} - vocabulary)
        if unknown:
            raise DataError(f"{where}: label(s) {unknown[:10]} are not in label_names {list(self.label_names)[:20]}")

    def __len__(self) -> int:
        return len(self.tracks)

    def __iter__(self) -> Iterator[Track]:
        return iter(self.tracks)

    @property
    def num_labels(self) -> int:
        """Size of the label vocabulary."""
        return len(self.label_names)

    @property
    def multi_label(self) -> bool:
        """True if any track has more than one label (tagging rather than classification)."""
        return any(len(t.labels) > 1 for t in self.tracks)

    @property
    def splits(self) -> tuple[str | None, ...]:
        """The splits used by the tracks, in :data:`SPLITS` order (``None`` last)."""
        used = {t.split for t in self.tracks}
        known = [s for s in SPLITS if s in used]
        others = sorted(s for s in used if s is not None and s not in SPLITS)
        return tuple(known + others + ([None] if None in used else []))

    def split(self, name: str | None) -> Catalogue:
        """Returns the tracks of one split (``None``: tracks without a split), same vocabulary."""
        return dataclasses.replace(self, tracks=tuple(t for t in self.tracks if t.split == name))

    def track(self, track_id: str) -> Track:
        """Returns the track with id ``track_id``.

        Raises:
            DataError: If there is no such track.
        """
        for t in self.tracks:
            if t.track_id == track_id:
                return t
        raise DataError(f"{self.source or 'catalogue'}: no track with id {track_id!r}")

    def label_index(self) -> dict[str, int]:
        """Maps each label name to its index in the multi-hot vector."""
        return {name: i for i, name in enumerate(self.label_names)}

    def multi_hot(self, track: Track) -> np.ndarray:
        """The labels of ``track`` as a multi-hot vector: float32 ``[num_labels]`` of 0 and 1."""
        index = self.label_index()
        out = np.zeros(len(self.label_names), np.float32)
        for label in track.labels:
            out[index[label]] = 1.0
        return out

    def label_counts(self) -> dict[str, int]:
        """Number of tracks carrying each label (every vocabulary entry, possibly 0)."""
        counts = collections.Counter(label for t in self.tracks for label in t.labels)
        return {name: counts.get(name, 0) for name in self.label_names}


# ---------------------------------------------------------------------------
# Building a catalogue from rows
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Row:
    where: str
    path: str
    track_id: str | None
    labels: tuple[str, ...]
    split: str | None


def _file_exists(path: str) -> bool:
    return is_uri(path) or os.path.isfile(path)


def _catalogue_from_rows(
    rows: Sequence[_Row],
    *,
    base: str,
    source: str,
    label_names: Sequence[str] | None,
    require_labels: bool,
    check_files: bool,
    splits: Sequence[str],
) -> Catalogue:
    problems: list[str] = []
    derived = default_track_ids([r.path if is_uri(r.path) else os.path.normpath(r.path) for r in rows])
    pairs: list[tuple[_Row, Track]] = []
    for row, derived_id in zip(rows, derived):
        split = row.split
        if split is not None and split not in splits:
            split = SPLIT_ALIASES.get(split.lower(), split)  # "val", "TRAIN": the name it stands for
            if split not in splits:
                problems.append(f"{row.where}: unknown split {row.split!r}; expected one of {tuple(splits)} (or "
                                f"{'/'.join(k for k, v in SPLIT_ALIASES.items() if v in splits and k != v)}) or empty")
        if require_labels and not row.labels:
            problems.append(f"{row.where}: no labels for {row.path!r}; every track needs at least one label")
        path = resolve_path(row.path, base=base)
        if check_files and not _file_exists(path):
            problems.append(f"{row.where}: audio file {path!r} does not exist")
        try:
            track_id = derived_id if row.track_id is None else validate_track_id(row.track_id, where=row.where)
            pairs.append((row, Track(path=path, track_id=track_id, labels=row.labels, split=split)))
        except DataError as err:
            problems.append(str(err))
    seen: dict[str, str] = {}
    listed: dict[str, str] = {}  # a file (its path, normalised) -> the row that first lists it
    for row, track in pairs:
        key = track.path if is_uri(track.path) else os.path.normpath(track.path)
        if key in listed:
            problems.append(f"{row.where}: lists {track.path!r} again (first at {listed[key]}); a file is one track")
            continue
        listed[key] = row.where
        if track.track_id in seen:
            first = seen[track.track_id]
            problems.append(f"{row.where}: duplicate track_id {track.track_id!r} (first used at {first})")
        seen.setdefault(track.track_id, row.where)
    tracks = [track for _, track in pairs]
    if label_names is None:
        vocabulary = tuple(sorted({label for t in tracks for label in t.labels}))
    else:
        vocabulary = tuple(label_names)
        known = set(vocabulary)
        for row in rows:
            unknown = [label for label in row.labels if label not in known]
            if unknown:
                problems.append(f"{row.where}: label(s) {unknown} are not in the given label_names")
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:20]) + more)
    if not tracks:
        raise DataError(f"{source}: no tracks; expected at least one row")
    _warn_of_case_variants(tracks, source=source)
    return Catalogue(tracks=tuple(tracks), label_names=vocabulary, source=source)


#: Other spellings of the three splits in manifests, taken where the split itself is not allowed (compared in
#: lower case): the names other tools write (``val``/``valid`` as TFDS datasets, ``dev`` as speech corpora,
#: ``TRAIN`` from a spreadsheet).
SPLIT_ALIASES: dict[str, str] = {
    **{name: name for name in SPLITS}, "training": "train",
    "valid": "validation", "val": "validation", "dev": "validation", "testing": "test",
}


def _warn_of_case_variants(tracks: Sequence[Track], *, source: str) -> None:
    """Logs a warning for labels that differ only in case or spacing (``Rock``, ``rock``): two classes to the model."""
    counts = collections.Counter(label for track in tracks for label in track.labels)
    variants: dict[str, list[str]] = {}
    for label in sorted(counts):
        variants.setdefault(" ".join(label.casefold().split()), []).append(label)
    alike = [names for names in variants.values() if len(names) > 1]
    if alike:
        shown = "; ".join(" and ".join(f"{name!r} ({counts[name]} track{'s' * (counts[name] != 1)})"
                                       for name in names) for names in alike[:5])
        logger.warning("%s: labels that differ only in case or spacing are different classes: %s%s; spell them "
                       "alike in the manifest if they are one", source, shown,
                       f" and {len(alike) - 5} more" if len(alike) > 5 else "")


def _split_value(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: split {value!r} is invalid: expected a string such as 'train'")
    return value.strip() or None


def _track_id_value(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: track_id {value!r} is invalid: expected a string")
    return str(value).strip() or None


# ---------------------------------------------------------------------------
# Manifest files
# ---------------------------------------------------------------------------


def _manifest_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv"):
        return ext[1:]
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    raise DataError(f"{path}: unknown manifest format {ext or '(no extension)'!r}; "
                    "expected a .csv, .tsv or .jsonl file")


def _open_text(path: str, mode: str) -> IO[str]:
    if is_uri(path):
        import tensorflow as tf  # only for remote manifests: keeps this module light

        return tf.io.gfile.GFile(path, mode)  # type: ignore[no-any-return]
    return open(path, mode, encoding="utf-8-sig" if "r" in mode else "utf-8", newline="")


def _gfile_text(path: str) -> str:
    """A whole text file through ``tf.io.gfile``; TensorFlow's errors (not OSErrors) become ``OSError``."""
    import tensorflow as tf  # only for remote manifests: keeps this module light

    try:
        with _open_text(path, "r") as handle:
            return handle.read()  # type: ignore[no-any-return]
    except tf.errors.OpError as err:
        raise OSError(f"{type(err).__name__}: {err.message}") from None


def _local_text(path: str) -> str:
    with _open_text(path, "r") as handle:
        return handle.read()


def _read_text(path: str, read_text: Callable[[str], str] | None = None) -> str:
    if not is_uri(path) and not os.path.isfile(path):
        raise DataError(f"{path}: manifest file not found")
    try:
        text = (read_text or (_gfile_text if is_uri(path) else _local_text))(path)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the manifest ({err})") from None
    return text[1:] if text.startswith("\ufeff") else text


def _csv_rows(text: str, *, source: str, delimiter: str) -> list[_Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if "path" not in fields:
        raise DataError(f"{source}: the header row {fields} has no 'path' column; "
                        "expected a header such as 'path,track_id,labels,split'")
    reader.fieldnames = fields
    rows = []
    for record in reader:
        where = f"{source} line {reader.line_num}"
        if not any((v or "").strip() for k, v in record.items() if k is not None):
            continue  # blank line
        path = (record.get("path") or "").strip()
        if not path:
            raise DataError(f"{where}: empty path")
        rows.append(_Row(
            where=where,
            path=path,
            track_id=_track_id_value(record.get("track_id"), where),
            labels=parse_labels(record.get("labels"), where=where),
            split=_split_value(record.get("split"), where),
        ))
    return rows


def _jsonl_rows(text: str, *, source: str) -> list[_Row]:
    rows = []
    for number, line in enumerate(json_lines(text), start=1):
        where = f"{source} line {number}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object with a 'path', got {type(record).__name__}")
        path = record.get("path")
        if not isinstance(path, str) or not path.strip():
            raise DataError(f"{where}: 'path' is missing or not a non-empty string")
        rows.append(_Row(
            where=where,
            path=path.strip(),
            track_id=_track_id_value(record.get("track_id"), where),
            labels=parse_labels(record.get("labels"), where=where),
            split=_split_value(record.get("split"), where),
        ))
    return rows


def read_manifest(
    path: str | os.PathLike[str],
    *,
    label_names: Sequence[str] | None = None,
    require_labels: bool = True,
    check_files: bool = True,
    splits: Sequence[str] = SPLITS,
    read_text: Callable[[str], str] | None = None,
) -> Catalogue:
    """Reads and validates a CSV/TSV or JSON Lines manifest (see the module docstring).

    Args:
        path: The manifest (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``); local or a URI.
        label_names: The label vocabulary in multi-hot order (``None``: the sorted
            set of labels in the manifest). Labels outside it are errors.
        require_labels: Reject tracks without labels.
        check_files: Reject local paths that do not exist (URIs are not checked:
            the jobs report unreadable files in their failures file).
        splits: Allowed split names.
        read_text: Reads a whole UTF-8 file, local or remote (e.g. ``beam_jobs.io.read_text``, Beam's
            filesystems, which also reach ``s3://`` and ``azfs://``); raises ``OSError`` if it cannot.
            Default: local files directly, URIs through ``tf.io.gfile``.

    Returns:
        The :class:`Catalogue`, tracks in manifest order with resolved paths.

    Raises:
        DataError: If the file is missing or malformed, or listing every problem
            found (up to 20): missing audio files, duplicate ids, unknown splits,
            empty label sets, unsafe ids.
    """
    path = os.fspath(path)
    fmt = _manifest_format(path)
    text = _read_text(path, read_text)
    if fmt == "jsonl":
        rows = _jsonl_rows(text, source=path)
    else:
        rows = _csv_rows(text, source=path, delimiter="\t" if fmt == "tsv" else ",")
    base = posixpath.dirname(path) if is_uri(path) else os.path.dirname(os.path.abspath(path))
    return _catalogue_from_rows(
        rows, base=base, source=path, label_names=label_names, require_labels=require_labels,
        check_files=check_files, splits=splits,
    )


def _relative_to(path: str, folder: str) -> str:
    if is_uri(path) or is_uri(folder):
        prefix = folder.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else path
    absolute = os.path.abspath(path)
    try:
        relative = os.path.relpath(absolute, folder)
    except ValueError:  # another drive on Windows
        return absolute
    if relative.startswith(os.pardir + os.sep) or relative == os.pardir:
        return absolute
    return relative.replace(os.sep, "/")


def write_manifest(catalogue: Catalogue | Iterable[Track], path: str | os.PathLike[str]) -> str:
    """Writes tracks as a manifest that :func:`read_manifest` reads back to the same tracks.

    The format follows the extension (``.csv``, ``.tsv`` or ``.jsonl``). Paths
    inside the manifest's folder are written relative to it, others absolute.
    Labels are joined with ``;`` in CSV/TSV and written as lists in JSON Lines.

    Args:
        catalogue: A :class:`Catalogue` or tracks.
        path: Output manifest path (its folder is created).

    Returns:
        The path written.

    Raises:
        DataError: If the extension is not a manifest format.
    """
    path = os.fspath(path)
    fmt = _manifest_format(path)
    tracks = list(catalogue)
    folder = posixpath.dirname(path) if is_uri(path) else os.path.dirname(os.path.abspath(path))
    if not is_uri(path):
        os.makedirs(folder, exist_ok=True)
    with _open_text(path, "w") as handle:
        if fmt == "jsonl":
            for t in tracks:
                record = {"path": _relative_to(t.path, folder), "track_id": t.track_id,
                          "labels": list(t.labels), "split": t.split}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            writer = csv.writer(handle, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
            writer.writerow(["path", "track_id", "labels", "split"])
            for t in tracks:
                writer.writerow([_relative_to(t.path, folder), t.track_id, LABEL_SEPARATOR.join(t.labels),
                                 t.split or ""])
    return path


# ---------------------------------------------------------------------------
# Folder layouts and public datasets
# ---------------------------------------------------------------------------


def _walk_audio(root: str, extensions: Sequence[str]) -> list[str]:
    exts = tuple(e.lower() for e in extensions)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(exts):
                found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(found)


def manifest_from_folder(
    root: str | os.PathLike[str],
    *,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    split: str | None = None,
    splits: Mapping[str, str] | None = None,
    label_names: Sequence[str] | None = None,
) -> Catalogue:
    """Builds a catalogue from a ``label/track.ext`` folder layout (e.g. ``rock/track 01.wav``).

    The label of a file is the first folder below ``root`` (deeper folders are
    allowed: ``rock/live/a.wav`` is labelled ``rock``). Hidden files and folders
    are skipped; tracks are sorted by path. Write it with :func:`write_manifest`
    to edit or reuse it.

    Args:
        root: The dataset folder.
        extensions: File extensions to include (case-insensitive).
        split: Split given to every track (``None``: no split).
        splits: Per-track splits, mapping a path relative to ``root`` (with or
            without extension) to a split; overrides ``split`` for those tracks.
        label_names: Label vocabulary (``None``: the sorted folder names).

    Returns:
        The :class:`Catalogue`; default track ids are the relative paths without
        extension (see the module docstring).

    Raises:
        DataError: If ``root`` is not a folder, holds no audio, or holds audio
            directly at its top level (no label folder).
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a folder; expected a folder of label folders (e.g. rock/track.wav)")
    files = _walk_audio(root, extensions)
    if not files:
        raise DataError(f"{root}: no audio files with extensions {tuple(extensions)}")
    unlabelled = [f for f in files if "/" not in f]
    if unlabelled:
        raise DataError(f"{root}: {len(unlabelled)} file(s) are not inside a label folder, e.g. {unlabelled[:3]}; "
                        "expected label/track.ext")
    lookup = dict(splits or {})
    rows = []
    for relative in files:
        stem = posixpath.splitext(relative)[0]
        rows.append(_Row(where=f"{root}/{relative}", path=relative, track_id=None,
                         labels=(relative.split("/", 1)[0],), split=lookup.get(relative, lookup.get(stem, split))))
    return _catalogue_from_rows(rows, base=root, source=root, label_names=label_names, require_labels=True,
                                check_files=False, splits=SPLITS)


def read_magnatagatune(
    annotations_csv: str | os.PathLike[str],
    audio_root: str | os.PathLike[str],
    *,
    top_k: int = 50,
    tags: Sequence[str] | None = None,
    drop_untagged: bool = True,
    check_files: bool = True,
) -> Catalogue:
    """Reads MagnaTagATune's ``annotations_final.csv`` into a catalogue.

    The file is tab-separated with a header ``clip_id <188 tags> mp3_path``. Tags
    are the ``top_k`` most frequent ones (ties keep the file's column order),
    most frequent first, unless ``tags`` is given (e.g. :data:`MTAT_TOP50_TAGS`).
    Splits follow the mp3 folder, as in the SampleCNN recipe (Lee et al. 2018):
    ``0``-``b`` train, ``c`` validation, ``d``-``f`` test. Clips with none of the
    tags are dropped (leaving 15,250 / 1,529 / 4,332 clips with the top 50).
    Track ids are the clip ids.

    Args:
        annotations_csv: Path of ``annotations_final.csv``.
        audio_root: Folder holding the ``0`` ... ``f`` mp3 folders.
        top_k: Number of most frequent tags to keep (ignored when ``tags`` is given).
        tags: Explicit tag vocabulary, in multi-hot order.
        drop_untagged: Drop clips with none of the tags (otherwise keep them with
            an empty label set).
        check_files: Reject missing local mp3 files.

    Returns:
        The :class:`Catalogue`.

    Raises:
        DataError: If the file is missing or malformed, a tag is unknown, or mp3
            files are missing.
    """
    source = os.fspath(annotations_csv)
    text = _read_text(source)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{source}: empty file; expected MagnaTagATune's annotations_final.csv") from None
    if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
        raise DataError(f"{source}: header {header[:3]}...{header[-1:]} is not MagnaTagATune's: expected "
                        "tab-separated 'clip_id', the tag columns, then 'mp3_path'")
    tag_columns = header[1:-1]
    records: list[tuple[int, str, str, np.ndarray]] = []
    for values in reader:
        if not values or not any(v.strip() for v in values):
            continue
        where = f"{source} line {reader.line_num}"
        if len(values) != len(header):
            raise DataError(f"{where}: {len(values)} columns, expected {len(header)} like the header")
        try:
            flags = np.array([int(v) for v in values[1:-1]], dtype=np.int8)
        except ValueError:
            raise DataError(f"{where}: tag values must be 0 or 1") from None
        records.append((reader.line_num, values[0].strip(), values[-1].strip(), flags))
    if not records:
        raise DataError(f"{source}: no clips")
    matrix = np.stack([r[3] for r in records])
    if tags is None:
        if not 0 < top_k <= len(tag_columns):
            raise DataError(f"top_k={top_k} is invalid: expected 1..{len(tag_columns)} (the number of tags)")
        counts = matrix.sum(axis=0)
        order = sorted(range(len(tag_columns)), key=lambda i: (-int(counts[i]), i))[:top_k]
        vocabulary = tuple(tag_columns[i] for i in order)
    else:
        vocabulary = tuple(tags)
        missing = [t for t in vocabulary if t not in tag_columns]
        if missing:
            raise DataError(f"{source}: tag(s) {missing} are not columns of the annotations file")
    columns = [tag_columns.index(t) for t in vocabulary]
    rows = []
    dropped = 0
    for line, clip_id, mp3_path, flags in records:
        labels = tuple(vocabulary[j] for j, c in enumerate(columns) if flags[c])
        if not labels and drop_untagged:
            dropped += 1
            continue
        folder = mp3_path.split("/", 1)[0]
        split = _MTAT_SPLIT_DIRS.get(folder)
        if split is None:
            raise DataError(f"{source} line {line}: mp3_path {mp3_path!r} is not in a folder 0-9 or a-f")
        rows.append(_Row(where=f"{source} line {line}", path=mp3_path, track_id=clip_id, labels=labels, split=split))
    if dropped:
        logger.info("%s: dropped %d clip(s) with none of the %d tags", source, dropped, len(vocabulary))
    return _catalogue_from_rows(rows, base=os.fspath(audio_root), source=source, label_names=vocabulary,
                                require_labels=drop_untagged, check_files=check_files, splits=SPLITS)


def _gtzan_id(relative: str) -> str:
    return sanitize_track_id(posixpath.basename(posixpath.splitext(relative)[0]))


def _read_split_list(path: str) -> list[str]:
    text = _read_text(path)
    return [line.strip().replace("\\", "/") for line in text.splitlines() if line.strip()]


def read_gtzan(
    root: str | os.PathLike[str],
    *,
    split_files: Mapping[str, str | os.PathLike[str]] | None = None,
    check_files: bool = True,
) -> Catalogue:
    """Reads GTZAN's folder layout (``<genre>/<genre>.000NN.wav``, or ``.au``).

    Args:
        root: The folder holding the ten genre folders (``genres/`` or
            ``genres_original/`` in the common archives).
        split_files: Maps a split name (``"train"``, ``"validation"``,
            ``"test"``) to a list file with one ``genre/file`` path per line, such
            as the artist-filtered split of Kereliuk et al. (2015)
            (``train_filtered.txt``, ``valid_filtered.txt``, ``test_filtered.txt``)
            used by Lee et al. (2018). Entries match files regardless of
            extension. Only listed files are kept (the filtered split leaves out
            faulty clips). ``None``: every file, no split.

    Returns:
        The :class:`Catalogue`: label = genre (vocabulary :data:`GTZAN_GENRES`),
        track id = the file name without extension (``blues.00029``).

    Raises:
        DataError: If ``root`` has no genre folders, a listed file is missing or
            listed twice, or a folder is not one of the ten genres.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a folder; expected GTZAN's folder of genre folders")
    files = [f for f in _walk_audio(root, AUDIO_EXTENSIONS) if "/" in f]
    if not files:
        raise DataError(f"{root}: no audio in genre folders; expected e.g. {root}/blues/blues.00000.wav")
    by_stem = {posixpath.splitext(f)[0]: f for f in files}
    unknown = sorted({f.split("/", 1)[0] for f in files} - set(GTZAN_GENRES))
    if unknown:
        raise DataError(f"{root}: folder(s) {unknown} are not GTZAN genres {GTZAN_GENRES}")
    assignments: list[tuple[str, str | None, str]] = []
    if split_files is None:
        assignments = [(f, None, f"{root}/{f}") for f in files]
    else:
        problems = []
        seen: dict[str, str] = {}
        for split, list_path in split_files.items():
            list_path = os.fspath(list_path)
            for number, entry in enumerate(_read_split_list(list_path), start=1):
                where = f"{list_path} line {number}"
                stem = posixpath.splitext(entry)[0]
                if stem.count("/") > 1:  # tolerate a leading folder such as genres/blues/...
                    stem = "/".join(stem.split("/")[-2:])
                if stem in seen:
                    problems.append(f"{where}: {entry!r} is already listed at {seen[stem]}")
                    continue
                seen[stem] = where
                if stem not in by_stem:
                    problems.append(f"{where}: {entry!r} is not in {root}")
                    continue
                assignments.append((by_stem[stem], split, where))
        if problems:
            raise DataError(f"GTZAN split lists: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:20]))
    rows = [
        _Row(where=where, path=relative, track_id=_gtzan_id(relative),
             labels=(relative.split("/", 1)[0],), split=split)
        for relative, split, where in assignments
    ]
    return _catalogue_from_rows(rows, base=root, source=root, label_names=GTZAN_GENRES, require_labels=True,
                                check_files=check_files, splits=SPLITS)
