"""Training data from TensorFlow Datasets: a prepared TFDS dataset converted once into a tfaural dataset folder.

``python -m tfaural.training.train --data NAME`` accepts a TFDS name as users write it
(``tfaural_catalogue/demo``, ``tfaural_gtzan/22050hz:1.0.0``, ``speech_commands``)
as well as a TFRecord dataset folder. :func:`prepare_tfds` finds the **already
prepared** dataset in the TFDS ``data_dir`` (nothing is ever downloaded or
generated here: an unprepared dataset is a :class:`~tfaural.errors.DataError`
that says how to prepare it) and converts its splits into a folder with the
schema of :mod:`tfaural.data.tfrecord` (``dataset.json`` + whole-track shards),
so :func:`~tfaural.data.pipeline.make_dataset` and
:func:`~tfaural.data.pipeline.make_track_dataset` read it unchanged.

What is converted:

* **Audio**: the one ``tfds.features.Audio`` feature (or the first supervised
  key). int16 audio is kept sample for sample; float audio is quantised with
  :func:`~tfaural.data.tfrecord.quantize` (clipped to [-1, 1], NaN/Inf is a
  failure); other integer widths are scaled to full range first; multi-channel
  audio ``[samples, channels]`` is averaged to mono. The sample rate is the
  feature's ``sample_rate`` (a DataError if the feature has none).
* **Labels**: a ``ClassLabel`` (one-hot), a ``Sequence(ClassLabel)`` (multi-hot)
  or a ``FeaturesDict`` of scalar booleans (multi-hot, one label per key). The
  label names are the ClassLabel names (the sorted keys). As for catalogue manifests, the
  dataset is multi-label (tagging) if any track has more than one label, else
  single-label (classification). The feature is the second supervised key, else ``label``, ``labels``,
  ``tags`` or the only supported one; choose another with ``label=``
  (``--tfds-label``; nested features as ``instrument/family``).
* **Splits**: TFDS ``train`` → ``train``; ``validation``, ``valid`` or ``val`` →
  ``validation``; ``test`` → ``test``. ``splits=`` (``--tfds-split
  NAME=SPEC``) maps a tfaural split to any TFDS split spec, slices included,
  e.g. ``{"train": "train[:90%]", "validation": "train[90%:]"}`` for a dataset
  that has no validation split; slices of one TFDS split must not overlap.
* **Track ids**: a ``track_id`` or ``id`` text feature, else the TFDS example id.
  Examples that cannot be converted (empty or non-finite audio, a label of -1)
  are skipped with a warning and listed in ``failures.jsonl``, as
  ``beam_jobs.make_tfrecords`` does.

The converted folder is ``<cache_dir>/<name>/<config>/<version>/`` (default cache
``~/.cache/tfaural/tfds``, or ``$XDG_CACHE_HOME/tfaural/tfds``; a ``-<hash>``
suffix when the split mapping or label feature differ from the defaults). A
conversion is written into a temporary sibling folder, its completion marker
``tfds_source.json`` (a :class:`TfdsSource`: TFDS version, fingerprint of the
prepared files, split mapping) is written last and the folder is then renamed
into place, so an interrupted conversion is redone, never half used. It is reused
as long as the marker matches the prepared TFDS files; re-preparing the TFDS
dataset (new files, new fingerprint) converts it again.

Example::

    from tfaural.data.tfds_source import prepare_tfds

    folder = prepare_tfds("tfaural_catalogue/demo", data_dir="demo/tfds", cache_dir=None)
    # folder holds dataset.json and train/validation/test shards

This module imports tensorflow-datasets only when a TFDS name has to be resolved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from tfaural import files
from tfaural._version import __version__
from tfaural.config import Config
from tfaural.errors import ConfigError, DataError, TfauralError

__all__ = [
    "MARKER_FILENAME",
    "CONVERTER_VERSION",
    "DEFAULT_SPLIT_NAMES",
    "TfdsOptions",
    "TfdsSource",
    "default_cache_dir",
    "is_dataset_folder",
    "looks_like_tfds_name",
    "resolve_data",
    "prepare_tfds",
    "read_tfds_source",
    "find_tfds_builder",
    "run_extra",
    "source_of_run",
]

logger = logging.getLogger(__name__)

MARKER_FILENAME = "tfds_source.json"
"""Completion marker of a converted folder (a :class:`TfdsSource`), written last."""

CONVERTER_VERSION = 1
"""Version of the conversion; a change invalidates every cached conversion."""

DEFAULT_SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "valid", "val"),
    "test": ("test",),
}
"""tfaural split → the TFDS split names it is taken from by default, first present wins."""

_LABEL_PREFERENCE = ("label", "labels", "tags")
_ID_FEATURES = ("track_id", "id")
_SHARD_BYTES = 256 * 2**20  # target payload per output shard
_TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?(:[0-9*]+\.[0-9*]+\.[0-9*]+)?")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")
_TFAURAL_BUILDERS = ("tfaural_catalogue", "tfaural_gtzan", "tfaural_magnatagatune")


# ---------------------------------------------------------------------------
# Options and the record of where a folder came from
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TfdsOptions:
    """How a TFDS name given as ``--data`` is found and converted.

    Attributes:
        data_dir: TFDS data directory holding the prepared dataset (``None``: TFDS's
            default, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        cache_dir: Where converted folders are kept (``None``: :func:`default_cache_dir`).
        splits: tfaural split → TFDS split spec overriding the default mapping, e.g.
            ``{"validation": "train[90%:]", "train": "train[:90%]"}``.
        label: The label feature (``None``: chosen automatically; see the module docstring).
    """

    data_dir: str | None = None
    cache_dir: str | None = None
    splits: Mapping[str, str] = dataclasses.field(default_factory=dict)
    label: str | None = None


@dataclasses.dataclass(frozen=True)
class TfdsSource(Config):
    """Where a converted dataset folder came from: the content of its ``tfds_source.json``.

    Training copies it into ``run.json`` (``extra["tfds"]``) so evaluation can find
    the same data again.

    Attributes:
        name: The TFDS name as given (e.g. ``"tfaural_catalogue/demo"``).
        full_name: ``<builder>/<config>/<version>`` (``<builder>/<version>`` without configs).
        version: The prepared TFDS version.
        data_dir: The TFDS data directory it was found in.
        fingerprint: Digest of the prepared TFDS files (names, sizes, times, dataset_info.json).
        splits: tfaural split → the TFDS split spec it was converted from.
        audio_feature: The audio feature converted.
        label_feature: The label feature converted (``/`` separates nested features).
        cache_key: The folder's path relative to the cache directory.
        converter_version: :data:`CONVERTER_VERSION` of the conversion.
    """

    kind: ClassVar[str] = "tfds_source"
    name: str
    full_name: str
    version: str
    data_dir: str
    fingerprint: str
    splits: dict[str, str]
    audio_feature: str
    label_feature: str
    cache_key: str
    converter_version: int = CONVERTER_VERSION

    def validate(self) -> None:
        if not isinstance(self.splits, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.splits.items()
        ):
            raise ConfigError(f"TfdsSource.splits={self.splits!r} is invalid: expected a mapping of split names")

    @property
    def pinned_name(self) -> str:
        """The name with its version pinned, e.g. ``"tfaural_catalogue/demo:1.0.0"``."""
        return f"{self.full_name.rsplit('/', 1)[0]}:{self.version}"

    def same_data(self, other: TfdsSource) -> bool:
        """True if both describe the same conversion of the same prepared files (the ``name`` spelling aside)."""
        return dataclasses.replace(self, name="", data_dir="") == dataclasses.replace(other, name="", data_dir="")


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/tfaural/tfds`` or ``~/.cache/tfaural/tfds``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "tfaural", "tfds")


# ---------------------------------------------------------------------------
# --data: a folder or a TFDS name
# ---------------------------------------------------------------------------


def is_dataset_folder(data: str) -> bool:
    """True if ``data`` is read as a TFRecord dataset (folder with ``dataset.json``, URI, glob or ``.json``)."""
    if "://" in data or any(c in data for c in "*?[") or data.endswith(".json"):
        return True
    return os.path.isfile(os.path.join(data, "dataset.json"))


def looks_like_tfds_name(data: str) -> bool:
    """True if ``data`` has the form of a TFDS name: ``name[/config][:version]``."""
    return bool(_TFDS_NAME.fullmatch(data))


def resolve_data(
    data: str,
    options: TfdsOptions | None = None,
    *,
    require_splits: Sequence[str] = (),
    progress: bool = True,
) -> str:
    """The dataset folder for a ``--data`` value: the folder itself, or a TFDS name converted.

    A folder with ``dataset.json`` (or a URI, shard glob or ``.json`` path) is returned
    as is; anything else of the form ``name[/config][:version]`` is treated as a TFDS
    name and converted by :func:`prepare_tfds`.

    Args:
        data: The ``--data`` value.
        options: Where to find and cache TFDS datasets (``None``: defaults).
        require_splits: tfaural splits the caller needs (TFDS names only).
        progress: Show a progress bar while converting.

    Returns:
        A dataset folder (local or a URI).

    Raises:
        DataError: If a TFDS name is unknown, not prepared, or cannot be converted.
    """
    if is_dataset_folder(data) or not looks_like_tfds_name(data):
        return data
    options = options or TfdsOptions()
    return prepare_tfds(
        data, data_dir=options.data_dir, cache_dir=options.cache_dir, splits=options.splits, label=options.label,
        require_splits=require_splits, progress=progress,
    )


def read_tfds_source(folder: str) -> TfdsSource | None:
    """The :class:`TfdsSource` of a converted folder, or ``None`` for any other dataset folder."""
    import tensorflow as tf

    path = os.path.join(folder, MARKER_FILENAME) if "://" not in folder else f"{folder.rstrip('/')}/{MARKER_FILENAME}"
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as handle:
        text = handle.read()
    try:
        return TfdsSource.from_json(text)
    except ConfigError as err:
        raise DataError(f"{path}: not a valid conversion marker ({err}); delete the folder to convert again") from None


def run_extra(folder: str) -> dict[str, Any]:
    """What a run records about its dataset folder in ``run.json`` ``extra``: ``{"tfds": ...}`` or ``{}``.

    For a converted folder: its :class:`TfdsSource` fields plus ``cache_dir`` (the cache
    root it lives in), enough for :func:`source_of_run` to find or rebuild it.
    """
    source = read_tfds_source(folder)
    if source is None:
        return {}
    root = folder.rstrip("/")
    cache_dir = root[: -len(source.cache_key)].rstrip("/") if root.endswith(source.cache_key) else None
    return {"tfds": {**source.to_dict(), "cache_dir": cache_dir}}


def source_of_run(extra: Mapping[str, Any]) -> tuple[TfdsSource, str | None] | None:
    """The :class:`TfdsSource` and cache root a run recorded with :func:`run_extra`, or ``None``."""
    recorded = extra.get("tfds")
    if not isinstance(recorded, dict):
        return None
    fields = dict(recorded)
    cache_dir = fields.pop("cache_dir", None)
    try:
        return TfdsSource.from_dict(fields), cache_dir
    except ConfigError as err:
        raise DataError(f"run.json extra.tfds is invalid ({err}); pass --data") from None


# ---------------------------------------------------------------------------
# Finding the prepared dataset
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Hides tensorflow-datasets' INFO lines (one per split read) while it is driven from here."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        absl.setLevel(level)


def _tfds() -> Any:
    import tensorflow_datasets as tfds

    import tfaural.data.tfds_builders  # noqa: F401  (registers our builders and the Int16Audio feature)

    return tfds


def _data_dirs(data_dir: str | None) -> list[str]:
    from tensorflow_datasets.core.utils import file_utils

    return [os.fspath(d) for d in file_utils.list_data_dirs(given_data_dir=data_dir)]


def _prepared_on_disk(data_dirs: Sequence[str]) -> list[str]:
    """Every prepared ``builder[/config]:version`` in the data dirs (folders ``builder[/config]/version``)."""
    import tensorflow as tf

    def subdirs(path: str) -> list[str]:
        try:
            return [n.rstrip("/") for n in tf.io.gfile.listdir(path) if tf.io.gfile.isdir(f"{path}/{n.rstrip('/')}")]
        except tf.errors.OpError:
            return []

    found = []
    for root in data_dirs:
        for builder in subdirs(root):
            if builder == "downloads" or builder.startswith("."):
                continue
            for level in subdirs(f"{root}/{builder}"):  # a version, or a config holding versions
                if tf.io.gfile.exists(f"{root}/{builder}/{level}/features.json"):
                    found.append(f"{builder}:{level}")
                    continue
                for version in subdirs(f"{root}/{builder}/{level}"):
                    if tf.io.gfile.exists(f"{root}/{builder}/{level}/{version}/features.json"):
                        found.append(f"{builder}/{level}:{version}")
    return sorted(set(found))


def _how_to_prepare(builder: str, config: str | None, data_dir: str) -> str:
    if builder == "tfaural_catalogue":
        return (f"python -m tfaural.data.build_tfds tfaural_catalogue --manifest MANIFEST "
                f"--config {config or 'NAME'} --sample-rate RATE --data-dir {data_dir}")
    if builder in _TFAURAL_BUILDERS:
        config_flag = f" --config {config}" if config else ""
        return (f"python -m tfaural.data.build_tfds {builder}{config_flag} --manual-dir AUDIO_DIR "
                f"--data-dir {data_dir} (or: tfds build {builder}{config_flag} --imports tfaural.data.tfds_builders "
                f"--manual_dir AUDIO_DIR --data_dir {data_dir})")
    name = f"{builder}/{config}" if config else builder
    return (f"tfds build {name} --data_dir {data_dir} on a machine with network access (add --manual_dir DIR for "
            "datasets that need a manual download), then copy the data_dir here")


def _not_found(name: str, builder: str, config: str | None, data_dir: str | None) -> DataError:
    tfds = _tfds()
    dirs = _data_dirs(data_dir)
    prepared = _prepared_on_disk(dirs)
    known = set(tfds.list_builders(with_community_datasets=False))  # registered code only: no network
    on_disk = {p.split("/")[0].split(":")[0] for p in prepared}
    where = ", ".join(dirs)
    if builder in known or builder in on_disk:
        same = [p for p in prepared if p.split("/")[0].split(":")[0] == builder]
        listed = f" Prepared there: {same}." if same else ""
        return DataError(
            f"TFDS dataset {name!r} is not prepared in {where}.{listed} tfaural reads prepared datasets only and "
            f"never downloads; prepare it first with: {_how_to_prepare(builder, config, dirs[0])}; or pass "
            "--tfds-data-dir (data_dir=) where it is prepared"
        )
    close = difflib.get_close_matches(builder, sorted(known | on_disk), n=5, cutoff=0.6)
    hint = f" Did you mean {close}?" if close else ""
    listed = f" Prepared in {where}: {prepared}." if prepared else f" Nothing is prepared in {where}."
    return DataError(
        f"{name!r} is neither a dataset folder with a dataset.json nor a known TFDS dataset name.{hint}{listed}"
    )


def find_tfds_builder(name: str, *, data_dir: str | None = None) -> Any:
    """The read-only TFDS builder of a prepared dataset (never prepares or downloads).

    Args:
        name: ``builder[/config][:version]``.
        data_dir: TFDS data directory (``None``: TFDS's default data directories).

    Returns:
        A ``tfds.core.DatasetBuilder`` reading the prepared files.

    Raises:
        DataError: If the name is malformed or unknown, or the dataset is not prepared in ``data_dir``.
    """
    tfds = _tfds()
    from tensorflow_datasets.core import read_only_builder, registered

    try:
        dataset_name, kwargs = tfds.core.naming.parse_builder_name_kwargs(name)
    except ValueError as err:
        raise DataError(f"{name!r} is not a TFDS name of the form name[/config][:version] ({err})") from None
    if dataset_name.namespace:
        raise DataError(f"{name!r}: TFDS namespaces (community datasets) are not supported; prepare the dataset "
                        "and give its plain name")
    extra = sorted(set(kwargs) - {"config", "version"})
    if extra:
        raise DataError(f"{name!r}: builder arguments {extra} are not supported; give name[/config][:version]")
    try:
        return read_only_builder.builder_from_files(name, data_dir=data_dir)
    except registered.DatasetNotFoundError:
        raise _not_found(name, dataset_name.name, kwargs.get("config"), data_dir) from None
    except ValueError as err:  # e.g. the dataset is prepared in several data dirs
        raise DataError(f"TFDS dataset {name!r}: {err}") from None


# ---------------------------------------------------------------------------
# What to convert: audio, labels, splits
# ---------------------------------------------------------------------------


def _feature_at(features: Any, path: str) -> Any:
    feature = features
    for part in path.split("/"):
        try:
            feature = feature[part]
        except (KeyError, TypeError):
            return None
    return feature


def _nested(path: str) -> dict[str, Any]:
    """``"a/b"`` → ``{"a": {"b": True}}`` (a PartialDecoding spec)."""
    spec: Any = True
    for part in reversed(path.split("/")):
        spec = {part: spec}
    return dict(spec)


def _value_at(example: Mapping[str, Any], path: str) -> Any:
    value: Any = example
    for part in path.split("/"):
        value = value[part]
    return value


def _label_kind(feature: Any) -> str | None:
    """``"single"``, ``"sequence"``, ``"bools"`` or ``None`` for an unsupported label feature."""
    tfds = _tfds()
    if isinstance(feature, tfds.features.ClassLabel):
        return "single"
    if isinstance(feature, tfds.features.Sequence) and isinstance(feature.feature, tfds.features.ClassLabel):
        return "sequence"
    if isinstance(feature, tfds.features.FeaturesDict) and feature.keys() and all(
        isinstance(f, tfds.features.Tensor) and tuple(f.shape) == () and
        (np.dtype(f.np_dtype) == np.bool_ or np.issubdtype(f.np_dtype, np.integer))
        for f in feature.values()
    ):
        return "bools"
    return None


def _label_names(feature: Any, kind: str) -> tuple[str, ...]:
    if kind == "single":
        return tuple(feature.names)
    if kind == "sequence":
        return tuple(feature.feature.names)
    return tuple(sorted(feature.keys()))  # sorted: a FeaturesDict read back from features.json has no stable order


def _choose_audio(info: Any) -> str:
    tfds = _tfds()
    features = info.features
    audio = [key for key, f in features.items() if isinstance(f, tfds.features.Audio)]
    supervised = info.supervised_keys
    if isinstance(supervised, tuple) and len(supervised) == 2 and supervised[0] in audio:
        return str(supervised[0])
    if len(audio) == 1:
        return audio[0]
    if "audio" in audio:
        return "audio"
    if not audio:
        raise DataError(f"TFDS dataset {info.full_name} has no tfds.features.Audio feature (features: "
                        f"{sorted(features.keys())}); tfaural trains on audio datasets only")
    raise DataError(f"TFDS dataset {info.full_name} has several audio features {audio}; tfaural converts one, "
                    "named 'audio'")


def _choose_label(info: Any, label: str | None) -> str:
    features = info.features
    if label is not None:
        feature = _feature_at(features, label)
        if feature is None:
            raise DataError(f"TFDS dataset {info.full_name} has no feature {label!r} (--tfds-label); its features "
                            f"are {sorted(features.keys())}")
        if _label_kind(feature) is None:
            raise DataError(f"TFDS feature {label!r} of {info.full_name} is a {type(feature).__name__}; a label "
                            "feature must be a ClassLabel, a Sequence(ClassLabel) or a FeaturesDict of booleans")
        return label
    candidates = [key for key, f in features.items() if _label_kind(f) is not None]
    supervised = info.supervised_keys
    if isinstance(supervised, tuple) and len(supervised) == 2 and supervised[1] in candidates:
        return str(supervised[1])
    for preferred in _LABEL_PREFERENCE:
        if preferred in candidates:
            return preferred
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataError(
            f"TFDS dataset {info.full_name} has no label feature tfaural can train on (features: "
            f"{sorted(features.keys())}); expected a ClassLabel, a Sequence(ClassLabel) or a FeaturesDict of "
            "booleans (name a nested one with --tfds-label parent/child)"
        )
    raise DataError(f"TFDS dataset {info.full_name} has several label features {candidates}; choose one with "
                    "--tfds-label (label= in Python)")


def _default_splits(available: Sequence[str]) -> dict[str, str]:
    splits = {}
    for ours, theirs in DEFAULT_SPLIT_NAMES.items():
        for candidate in theirs:
            if candidate in available:
                splits[ours] = candidate
                break
    return splits


def _split_counts(info: Any) -> str:
    return ", ".join(f"{name} ({split.num_examples})" for name, split in info.splits.items())


def _resolve_splits(info: Any, overrides: Mapping[str, str]) -> dict[str, str]:
    tfds = _tfds()
    splits = _default_splits(list(info.splits))
    for ours, spec in overrides.items():
        if not isinstance(ours, str) or not _SPLIT_NAME.fullmatch(ours):
            raise DataError(f"split name {ours!r} is invalid: expected letters, digits or '_' (e.g. validation)")
        if not spec:
            splits.pop(ours, None)
            continue
        try:
            _ = info.splits[spec]  # validates the spec: split names, slices
        except (ValueError, KeyError, AssertionError) as err:
            raise DataError(f"TFDS split spec {spec!r} (for {ours!r}) is invalid for {info.full_name}: {err}; its "
                            f"splits are {_split_counts(info)}") from None
        splits[ours] = spec
    if not splits:
        raise DataError(f"TFDS dataset {info.full_name} has none of the splits train/validation/test (its splits: "
                        f"{_split_counts(info)}); map them with --tfds-split train=SPLIT (splits= in Python)")
    ranges: dict[str, list[tuple[str, int, int]]] = {}
    for ours, spec in splits.items():
        absolute = tfds.core.ReadInstruction.from_spec(spec).to_absolute(info.splits)
        ranges[ours] = [(a.splitname, a.from_ or 0, info.splits[a.splitname].num_examples if a.to is None else a.to)
                        for a in absolute]
    names = list(splits)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            for split_a, start_a, end_a in ranges[first]:
                for split_b, start_b, end_b in ranges[second]:
                    if split_a == split_b and max(start_a, start_b) < min(end_a, end_b):
                        raise DataError(
                            f"tfaural splits {first!r} (TFDS {splits[first]!r}) and {second!r} (TFDS "
                            f"{splits[second]!r}) share examples of the TFDS split {split_a!r}; give disjoint slices, "
                            f"e.g. --tfds-split train={split_a}[:90%] --tfds-split validation={split_a}[90%:]"
                        )
    return splits


def _fingerprint(builder_dir: str) -> str:
    """Digest of the prepared files: names, sizes and modification times, and dataset_info.json itself."""
    import tensorflow as tf

    digest = hashlib.sha256()
    for name in sorted(tf.io.gfile.listdir(builder_dir)):
        path = f"{builder_dir.rstrip('/')}/{name}"
        stat = tf.io.gfile.stat(path)
        if stat.is_directory:
            continue
        digest.update(f"{name}\0{stat.length}\0{stat.mtime_nsec}\n".encode())
    with tf.io.gfile.GFile(f"{builder_dir.rstrip('/')}/dataset_info.json", "rb") as handle:
        digest.update(handle.read())
    return digest.hexdigest()[:32]


def _describe(builder: Any, name: str, options: TfdsOptions) -> TfdsSource:
    info = builder.info
    audio = _choose_audio(info)
    label = _choose_label(info, options.label)
    splits = _resolve_splits(info, options.splits)
    builder_dir = os.fspath(builder.data_dir)
    full_name = info.full_name
    data_dir = builder_dir[: -len(full_name)].rstrip("/") if builder_dir.endswith(full_name) else builder_dir
    if "://" not in data_dir:
        data_dir = os.path.abspath(data_dir)  # run.json must find it from any working directory
    try:
        default_label: str | None = _choose_label(info, None)
    except DataError:
        default_label = None
    cache_key = full_name
    if splits != _default_splits(list(info.splits)) or label != default_label:
        options_digest = hashlib.sha256(json.dumps([splits, label], sort_keys=True).encode()).hexdigest()[:8]
        cache_key = f"{full_name}-{options_digest}"
    return TfdsSource(
        name=name, full_name=full_name, version=str(info.version), data_dir=data_dir,
        fingerprint=_fingerprint(builder_dir), splits=splits, audio_feature=audio, label_feature=label,
        cache_key=cache_key,
    )


# ---------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------


def _sample_rate(info: Any, audio: str) -> int:
    rate = info.features[audio].sample_rate
    if rate is None or int(rate) <= 0:
        raise DataError(f"TFDS feature {audio!r} of {info.full_name} has no sample rate "
                        "(tfds.features.Audio(sample_rate=None)); tfaural needs it to build the model's inputs")
    return int(rate)


def _to_pcm(audio: np.ndarray) -> tuple[np.ndarray, int]:
    """TFDS audio ``[samples]`` or ``[samples, channels]`` → int16 mono ``[samples]`` and its count of clipped samples.

    Raises:
        DataError: On an empty, non-finite or unsigned-integer waveform or more than two dimensions.
    """
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2) or audio.size == 0:
        raise DataError(f"audio of shape {audio.shape} is invalid: expected [samples] or [samples, channels] with "
                        "at least one sample")
    if audio.dtype == np.int16 and audio.ndim == 1:
        return audio, 0
    if np.issubdtype(audio.dtype, np.signedinteger):
        y = audio.astype(np.float64) / float(np.iinfo(audio.dtype).max + 1)
    elif np.issubdtype(audio.dtype, np.floating):
        y = audio.astype(np.float64)
    else:
        raise DataError(f"audio of dtype {audio.dtype} is not supported: expected signed integers or floats")
    if audio.ndim == 2:
        if audio.dtype == np.int16:  # the mean of int16 channels, rounded: stays on the int16 grid
            return np.round(audio.astype(np.float64).mean(axis=1)).astype(np.int16), 0
        y = y.mean(axis=1)
    if not np.isfinite(y).all():
        raise DataError("audio has NaN or Inf samples")
    from tfaural.data.tfrecord import quantize

    return quantize(y), int(np.count_nonzero(np.abs(y) > 1.0))


def _one_hot(value: Any, kind: str, label_names: Sequence[str]) -> np.ndarray:
    if kind == "bools":
        return np.array([bool(value[name]) for name in label_names], np.float32)
    num_labels = len(label_names)
    labels = np.zeros(num_labels, np.float32)
    indices = np.atleast_1d(np.asarray(value, np.int64))
    bad = indices[(indices < 0) | (indices >= num_labels)]
    if bad.size:
        raise DataError(f"label {int(bad[0])} is outside 0..{num_labels - 1} (unlabelled example?)")
    labels[indices] = 1.0
    return labels


def _track_id(example: Mapping[str, Any], id_feature: str | None) -> str:
    if id_feature is not None:
        value = example[id_feature]
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        if text:
            return text
    return str(example["tfds_id"].decode("utf-8"))


def _id_feature(info: Any) -> str | None:
    tfds = _tfds()
    for key in _ID_FEATURES:
        if key in info.features and isinstance(info.features[key], tfds.features.Text):
            return key
    return None


def _shard_count(info: Any, spec: str, num_examples: int) -> int:
    """Shards for about :data:`_SHARD_BYTES` each, estimated from the TFDS split sizes (slices: pro rata)."""
    estimate = 0.0
    for name, split in info.splits.items():
        if (spec == name or spec.startswith(f"{name}[")) and split.num_examples:
            estimate = int(split.num_bytes) * num_examples / split.num_examples
    return int(min(max(1, -(-estimate // _SHARD_BYTES)), max(1, num_examples), 1024))


@dataclasses.dataclass
class _SplitWriter:
    """Writes one split's records into ``num_shards`` shards, in order, and counts them."""

    folder: str
    split: str
    num_examples: int
    num_shards: int
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    _index: int = -1
    _writer: Any = None

    def write(self, position: int, record: bytes, samples: int) -> None:
        import tensorflow as tf

        from tfaural.data.tfrecord import shard_path

        index = min(self.num_shards - 1, position * self.num_shards // max(1, self.num_examples))
        while self._index < index:
            self._open_next(tf, shard_path)
        self._writer.write(record)
        self.counts["tracks"] += 1
        self.counts["records"] += 1
        self.counts["samples"] += samples
        self.counts["bytes"] += len(record)

    def _open_next(self, tf: Any, shard_path: Any) -> None:
        if self._writer is not None:
            self._writer.close()
        self._index += 1
        self._writer = tf.io.TFRecordWriter(shard_path(self.folder, self.split, self._index, self.num_shards))

    def close(self) -> None:
        import tensorflow as tf

        from tfaural.data.tfrecord import shard_path

        while self._index < self.num_shards - 1:  # every shard exists, even an empty last one
            self._open_next(tf, shard_path)
        if self._writer is not None:
            self._writer.close()
        self.counts["shards"] = self.num_shards


def _examples(builder: Any, spec: str, source: TfdsSource, id_feature: str | None) -> Iterator[dict[str, Any]]:
    tfds = _tfds()
    wanted = _merge({source.audio_feature: True}, _nested(source.label_feature))
    if id_feature is not None:
        wanted[id_feature] = True
    dataset = builder.as_dataset(
        split=spec, shuffle_files=False, decoders=tfds.decode.PartialDecoding(wanted),
        read_config=tfds.ReadConfig(add_tfds_id=True, try_autocache=False),
    )
    yield from tfds.as_numpy(dataset)


def _merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    merged = dict(first)
    for key, value in second.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _convert(builder: Any, source: TfdsSource, folder: str, *, progress: bool) -> None:
    """Writes the dataset folder (shards, failures.jsonl, dataset.json, then the marker) into ``folder``."""
    from tqdm.auto import tqdm

    from tfaural.data.tfrecord import FAILURES_FILENAME, DatasetInfo, encode_example

    info = builder.info
    rate = _sample_rate(info, source.audio_feature)
    label_feature = _feature_at(info.features, source.label_feature)
    kind = _label_kind(label_feature)
    assert kind is not None
    label_names = _label_names(label_feature, kind)
    id_feature = _id_feature(info)
    splits: dict[str, dict[str, int]] = {}
    failures: list[dict[str, str]] = []
    clipped_tracks = 0
    most_labels = 0  # as catalogues: multi-label if any track has more than one label
    for ours, spec in source.splits.items():
        num_examples = int(info.splits[spec].num_examples)
        writer = _SplitWriter(folder, ours, num_examples, _shard_count(info, spec, num_examples),
                              counts={"manifest_tracks": num_examples, "tracks": 0, "records": 0, "failed": 0,
                                      "samples": 0, "bytes": 0})
        examples = _examples(builder, spec, source, id_feature)
        for position, example in enumerate(tqdm(examples, total=num_examples, unit="track",
                                                desc=f"converting {source.full_name} {spec} → {ours}",
                                                disable=not progress)):
            track_id = _track_id(example, id_feature)
            origin = f"tfds:{source.full_name}/{example['tfds_id'].decode('utf-8')}"
            try:
                pcm, clipped = _to_pcm(_value_at(example, source.audio_feature))
                labels = _one_hot(_value_at(example, source.label_feature), kind, label_names)
                record = encode_example(audio=pcm, sample_rate=rate, track_id=track_id, labels=labels,
                                        source_path=origin)
            except TfauralError as err:
                logger.warning("skipping %s (%s): %s", track_id, origin, err)
                failures.append({"path": origin, "track_id": track_id, "split": ours, "error": type(err).__name__,
                                 "reason": str(err)})
                writer.counts["failed"] += 1
                continue
            clipped_tracks += bool(clipped)
            most_labels = max(most_labels, int(np.count_nonzero(labels)))
            writer.write(position, record, pcm.size)
        writer.close()
        writer.counts["manifest_tracks"] = writer.counts["tracks"] + writer.counts["failed"]
        splits[ours] = writer.counts
    if clipped_tracks:
        logger.warning("%d tracks of %s had float samples outside [-1, 1]; they were clipped", clipped_tracks,
                       source.full_name)
    with open(os.path.join(folder, FAILURES_FILENAME), "w", encoding="utf-8") as handle:
        for failure in failures:
            handle.write(json.dumps(failure, ensure_ascii=False, sort_keys=True) + "\n")
    DatasetInfo(
        sample_rate=rate,
        label_names=label_names,
        multi_label=most_labels > 1,
        splits=splits,
        manifest=f"tfds:{source.full_name}",
        created_by=f"tfaural.data.tfds_source (tfaural {__version__})",
    ).write(folder)
    files.write_text(os.path.join(folder, MARKER_FILENAME), source.to_json(indent=2) + "\n")


def _is_current(folder: str, source: TfdsSource) -> bool:
    """True if ``folder`` holds a complete conversion of ``source`` whose shards are those its ``dataset.json``
    describes (:func:`~tfaural.data.tfrecord.verify_shards`; a damaged one is converted again, with a warning)."""
    from tfaural.data.tfrecord import DatasetInfo, shard_pattern, verify_shards

    try:
        existing = read_tfds_source(folder)
    except DataError:
        return False
    if existing is None or not existing.same_data(source) or not os.path.isfile(os.path.join(folder, "dataset.json")):
        return False
    try:
        info = DatasetInfo.read(folder)
        for split, counts in info.splits.items():
            files = sorted(glob.glob(shard_pattern(folder, split)))
            if len(files) != counts.get("shards", len(files)):
                raise DataError(f"split {split!r} has {len(files)} shard file(s), dataset.json {counts['shards']}")
            verify_shards(files, info, where=folder)
    except DataError as err:
        logger.warning("the conversion in %s fails its check (%s): converting it again", folder, err)
        return False
    return True


def _remove_stale_temporaries(folder: str) -> None:
    """Deletes temporary folders of conversions on this host whose process is gone."""
    parent, base = os.path.split(folder)
    prefix = f"{base}.tmp-{socket.gethostname()}-"
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        if not entry.startswith(prefix):
            continue
        pid = entry[len(prefix):]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_tfds(
    name: str,
    *,
    data_dir: str | None,
    cache_dir: str | None,
    splits: Mapping[str, str] | None = None,
    label: str | None = None,
    require_splits: Sequence[str] = (),
    progress: bool = True,
) -> str:
    """Converts a prepared TFDS dataset into a tfaural dataset folder, or reuses the conversion.

    Args:
        name: ``builder[/config][:version]``, e.g. ``"tfaural_catalogue/demo"`` or ``"speech_commands"``.
        data_dir: TFDS data directory where it is prepared (``None``: TFDS's default,
            which honours ``$TFDS_DATA_DIR``).
        cache_dir: Root of the converted folders (``None``: :func:`default_cache_dir`). Local.
        splits: tfaural split → TFDS split spec, overriding the default mapping
            (``train``; ``validation``/``valid``/``val``; ``test``); an empty spec drops a split.
        label: The label feature (``None``: chosen automatically).
        require_splits: tfaural splits that must be present (e.g. ``("train", "validation")``
            for training); checked before anything is converted.
        progress: Show a progress bar while converting.

    Returns:
        The dataset folder (``dataset.json`` + shards + ``tfds_source.json``).

    Raises:
        DataError: If the dataset is unknown or not prepared, a required split is missing,
            the features cannot be converted, or the conversion fails.
    """
    with _quiet_absl():
        return _prepare(name, data_dir=data_dir, cache_dir=cache_dir, splits=splits, label=label,
                        require_splits=require_splits, progress=progress)


def _prepare(
    name: str,
    *,
    data_dir: str | None,
    cache_dir: str | None,
    splits: Mapping[str, str] | None,
    label: str | None,
    require_splits: Sequence[str],
    progress: bool,
) -> str:
    builder = find_tfds_builder(name, data_dir=data_dir)
    source = _describe(builder, name, TfdsOptions(data_dir=data_dir, cache_dir=cache_dir, splits=splits or {},
                                                  label=label))
    missing = [split for split in require_splits if split not in source.splits]
    if missing:
        raise DataError(
            f"TFDS dataset {source.full_name} has no split for {missing} (its splits: {_split_counts(builder.info)}). "
            "Map one with a slice of another split, e.g. --tfds-split train=train[:90%] "
            "--tfds-split validation=train[90%:] (splits={'train': 'train[:90%]', 'validation': 'train[90%:]'} "
            "in Python)"
        )
    _sample_rate(builder.info, source.audio_feature)  # fail before converting anything
    folder = os.path.join(os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir())), source.cache_key)
    if _is_current(folder, source):
        logger.info("reusing the conversion of %s in %s", source.full_name, folder)
        return folder
    _remove_stale_temporaries(folder)
    temporary = f"{folder}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    logger.info("converting TFDS %s (%s) into %s", source.full_name, source.data_dir, folder)
    try:
        _convert(builder, source, temporary, progress=progress)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if os.path.isdir(folder):
        shutil.rmtree(folder)  # outdated or incomplete; a crash from here on leaves no folder: converted again
    try:
        os.replace(temporary, folder)
    except OSError:
        if not _is_current(folder, source):  # another process did not just finish the same conversion
            raise
        shutil.rmtree(temporary, ignore_errors=True)
    return folder
