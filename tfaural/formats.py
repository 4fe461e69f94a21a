"""The one owner of the file formats shared between packages; TensorFlow-free.

An export's ``assets/metadata.json`` is written by :mod:`export` and read by the Beam
jobs (launcher, workers and the model process), the correlation analysis, the
report (through the copy a job keeps in its ``job.json``) and any client. All of them
read it here, with :func:`read_export_metadata` (a local folder, or any filesystem
through a ``read_bytes`` function: Beam's ``FileSystems`` or ``tf.io.gfile``) or
:func:`parse_export_metadata` (text already read), into the typed
:class:`ExportMetadata`; nobody else parses it by string keys. The file is written
with :func:`export_metadata_text`.

Every catalogue job's output folder holds ``manifest.jsonl`` (one :class:`ManifestRow`
per input track: :func:`manifest_text` writes it, :func:`parse_manifest` reads it) and
``job.json`` (a :class:`JobRecord`: :meth:`JobRecord.to_text`, :func:`parse_job_record`).

The auralise job writes one ``track.json`` per track (a :class:`TrackRecord` of
:class:`FeatureRecord` entries; :meth:`TrackRecord.to_text`, :func:`parse_track_record`),
which ``--skip-existing`` and the listening report read back.

``run.json`` (a training run's :class:`tfaural.training.run.RunInfo`) is owned by
:mod:`tfaural.training.run`, which the Beam jobs never need.

Example:
    >>> meta = read_export_metadata("exports/choi/1")
    >>> meta.sample_rate, meta.segment_length, meta.labels[:2]
    (11025, 44100, ('classical', 'jazz'))
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from tfaural.errors import DataError, ModelError

__all__ = [
    "EXPORT_METADATA_FILE",
    "EXPORT_LABELS_FILE",
    "TAGGING_SIGNATURES",
    "ExportMetadata",
    "parse_export_metadata",
    "read_export_metadata",
    "resolve_export_dir",
    "export_metadata_text",
    "MANIFEST_FILE",
    "JOB_FILE",
    "OK",
    "FAILED",
    "ManifestRow",
    "manifest_text",
    "parse_manifest",
    "iter_manifest",
    "json_lines",
    "JobRecord",
    "parse_job_record",
    "TRACK_FILE",
    "FeatureRecord",
    "TrackRecord",
    "parse_track_record",
    "finite_or_none",
]

#: Paths inside an export version directory (``/``-separated: they also name objects on remote filesystems).
EXPORT_METADATA_FILE = "assets/metadata.json"
EXPORT_LABELS_FILE = "assets/labels.txt"

#: The scoring and feature signatures: all that an export made with ``python -m export --signatures tagging`` has.
TAGGING_SIGNATURES = ("serving_default", "serving_wav", "features")


def _local_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@dataclasses.dataclass(frozen=True)
class ExportMetadata:
    """What an export's ``assets/metadata.json`` says, typed (see :mod:`export.metadata` for how it is built).

    Attributes:
        family: Model family, e.g. ``"choi"``, ``"samplecnn"``, ``"musicnn"``.
        sample_rate: The model's sample rate in Hz.
        segment_length: Samples per model input segment.
        segment_hop: Samples between the starts of a clip's segments (``segment_length``: no overlap).
        labels: Output label names, in output-unit order.
        task: ``"single-label"`` or ``"multi-label"`` (``None``: not recorded).
        top_k: Width of the ``labels`` output.
        stft: STFT settings of spectrogram models (``n_fft``, ``hop_length``, ``win_length``: ``null``, the
            window is ``n_fft`` samples; ``window``: ``"hann"``; ``center``: ``true``), else ``None``. Frames
            that are not centred (``center: false``: a ``keras.layers.STFTSpectrogram``'s, or
            ``tf.signal.stft``'s, whose ``win_length`` may be shorter than ``n_fft``) say what makes them
            (``layer``) and their ``padding``.
        mel: Mel filterbank of mel-input models, else ``None``.
        input_scaling: How spectrogram models scale their input (``{"mode", "log_c"}``), else ``None``.
        max_seconds: Longest input of the scoring and feature signatures, in seconds.
        max_samples: The same in samples.
        max_deconv_seconds: Longest input of ``deconvolve`` and ``auralise`` (batch x length), in seconds.
        max_deconv_samples: The same in samples.
        min_deconv_samples: Shortest input of ``deconvolve`` and ``auralise``, in samples: the fewest whose maps
            at the deepest deconvolvable layer are not empty, at most one segment (one segment in exports made
            before it was recorded).
        max_request_seconds: Largest batch x length of one scoring call, in seconds.
        max_deconv_feature_seconds: Largest features x batch x length of one deconvolution call, in seconds.
        max_deconv_feature_samples: The same in samples.
        deconv_chunk_elements: Elements of one deconvolution chunk inside a call.
        deconvolvable_layers: Valid ``layer`` values of ``deconvolve``/``auralise``.
        features_per_layer: Number of feature maps of each deconvolvable layer.
        layer_names: The model's name of each deconvolvable layer (e.g. ``{1: "pool1"}``), if recorded.
        feature_levels: The pooled levels of the ``features`` signature, in vector order
            (``{"name", "layer", "channels"}`` each).
        signatures: Each signature's description, ``inputs`` and ``outputs`` (name -> ``{"dtype", "shape", ...}``).
        signature_savedmodels: Signature -> its one-signature SavedModel, relative to the export.
        model_config: The architecture config (its ``kind`` and parameters).
        run_id: The training run's id.
        run_created: ISO-8601 UTC time the training run was created.
        run_extra: Free-form details of the run (dataset, recipe, scores, ``pretrained``).
        exported: ISO-8601 UTC time of the export.
        tfaural_version: Version of tfaural that trained the model.
        tensorflow_version: Version of TensorFlow that exported it.
        pretrained: The published model's name if the run was imported (e.g. ``"MTT_vgg"``), else ``None``.
        data: The whole file as read (what a job's ``job.json`` keeps, byte for byte).
        path: Where it was read from (``""`` if it was parsed from a copy).
    """

    family: str
    sample_rate: int
    segment_length: int
    segment_hop: int
    labels: tuple[str, ...]
    task: str | None
    top_k: int
    stft: Mapping[str, Any] | None
    mel: Mapping[str, Any] | None
    input_scaling: Mapping[str, Any] | None
    max_seconds: float | None
    max_samples: int | None
    max_deconv_seconds: float | None
    max_deconv_samples: int | None
    min_deconv_samples: int
    max_request_seconds: float | None
    max_deconv_feature_seconds: float | None
    max_deconv_feature_samples: int | None
    deconv_chunk_elements: int | None
    deconvolvable_layers: tuple[int, ...]
    features_per_layer: Mapping[int, int]
    layer_names: Mapping[int, str] | None
    feature_levels: tuple[Mapping[str, Any], ...]
    signatures: Mapping[str, Mapping[str, Any]]
    signature_savedmodels: Mapping[str, str]
    model_config: Mapping[str, Any]
    run_id: str | None
    run_created: str | None
    run_extra: Mapping[str, Any]
    exported: str | None
    tfaural_version: str | None
    tensorflow_version: str | None
    pretrained: str | None
    data: Mapping[str, Any] = dataclasses.field(repr=False)
    path: str = ""

    @classmethod
    def from_dict(cls, data: Any, *, path: str = "") -> ExportMetadata:
        """Checks and types the content of a ``metadata.json``.

        Args:
            data: The parsed JSON object (anything else is an error).
            path: Where it came from, for error messages.

        Raises:
            ModelError: Naming ``path`` and the field, if a field the consumers rely on is missing or mistyped.
        """
        where = path or "metadata.json"
        if not isinstance(data, Mapping) or "sample_rate" not in data:
            raise ModelError(f"{where}: not a tfaural metadata file (no sample_rate)")

        def number(key: str, default: int | None = None) -> int | None:
            value = data.get(key, default)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
                raise ModelError(f"{where}: {key} is {value!r}, not a non-negative integer")
            return int(value)

        def seconds(key: str) -> float | None:
            value = data.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ModelError(f"{where}: {key} is {value!r}, not a non-negative number of seconds")
            return float(value)

        def mapping(key: str) -> Mapping[str, Any]:
            value = data.get(key)
            if value is None:
                return {}
            if not isinstance(value, Mapping):
                raise ModelError(f"{where}: {key} is {type(value).__name__}, not an object")
            return value

        rate, length = number("sample_rate"), number("segment_length", 0)
        if not rate:
            raise ModelError(f"{where}: sample_rate is {data.get('sample_rate')!r}, not a positive integer")
        labels = data.get("labels") or []
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ModelError(f"{where}: labels is not a list of names")
        try:
            widths = {int(layer): int(n) for layer, n in mapping("features_per_layer").items()}
            names = data.get("layer_names")
            layer_names = {int(layer): str(name) for layer, name in names.items()} if names else None
            layers = tuple(int(layer) for layer in data.get("deconvolvable_layers") or ())
        except (TypeError, ValueError, AttributeError) as err:
            raise ModelError(f"{where}: the deconvolvable layers are not integers ({err})") from None
        stft, mel, scaling = data.get("stft"), data.get("mel"), data.get("input_scaling")
        if isinstance(stft, Mapping) and stft.get("win_length") not in (None, stft.get("n_fft")):
            win, fft = stft.get("win_length"), stft.get("n_fft")
            if stft.get("center", True) is not False:
                raise ModelError(f"{where}: stft.win_length is {win!r}, but tfaural's STFT window is always "
                                 f"n_fft={fft!r} samples long (expected null)")
            if not (isinstance(win, int) and isinstance(fft, int) and 2 <= win <= fft):
                raise ModelError(f"{where}: stft.win_length is {win!r}: expected frames of 2 to n_fft={fft!r} "
                                 "samples (tf.signal.stft's frame_length)")
        extra: Mapping[str, Any] = data["run_extra"] if isinstance(data.get("run_extra"), Mapping) else {}
        pretrained: Mapping[str, Any] = extra["pretrained"] if isinstance(extra.get("pretrained"), Mapping) else {}
        return cls(
            family=str(data.get("family") or "?"),
            sample_rate=rate,
            segment_length=length or 0,
            segment_hop=number("segment_hop") or length or 0,
            labels=tuple(labels),
            task=data.get("task"),
            top_k=number("top_k", 5) or 5,
            stft=stft if isinstance(stft, Mapping) else None,
            mel=mel if isinstance(mel, Mapping) else None,
            input_scaling=scaling if isinstance(scaling, Mapping) else None,
            max_seconds=seconds("max_seconds"),
            max_samples=number("max_samples"),
            max_deconv_seconds=seconds("max_deconv_seconds"),
            max_deconv_samples=number("max_deconv_samples"),
            min_deconv_samples=min(number("min_deconv_samples") or length or 0, length or 0),
            max_request_seconds=seconds("max_request_seconds"),
            max_deconv_feature_seconds=seconds("max_deconv_feature_seconds"),
            max_deconv_feature_samples=number("max_deconv_feature_samples"),
            deconv_chunk_elements=number("deconv_chunk_elements"),
            deconvolvable_layers=layers,
            features_per_layer=widths,
            layer_names=layer_names,
            feature_levels=tuple(data.get("feature_levels") or ()),
            signatures=mapping("signatures"),
            signature_savedmodels=mapping("signature_savedmodels"),
            model_config=mapping("model_config"),
            run_id=data.get("run_id"),
            run_created=data.get("run_created"),
            run_extra=extra,
            exported=data.get("exported"),
            tfaural_version=data.get("tfaural_version"),
            tensorflow_version=data.get("tensorflow_version"),
            pretrained=pretrained.get("name"),
            data=data,
            path=path,
        )

    @property
    def segment_seconds(self) -> float:
        """Length of the model's input segment in seconds."""
        return self.segment_length / self.sample_rate

    @property
    def min_deconv_seconds(self) -> float:
        """Shortest input of ``deconvolve`` and ``auralise`` in seconds."""
        return self.min_deconv_samples / self.sample_rate

    def signature(self, name: str, *, export_dir: str) -> Mapping[str, Any]:
        """The description of signature ``name`` (``inputs``, ``outputs``, ...).

        Raises:
            ModelError: If the export has no such signature (e.g. ``auralise`` of a mel-frame model).
        """
        if name not in self.signatures:
            hint = ""
            if name not in TAGGING_SIGNATURES and set(self.signatures) <= set(TAGGING_SIGNATURES):
                hint = ("; it was exported with its tagging signatures only (python -m export --signatures "
                        "tagging): export the run again without --signatures to deconvolve and auralise")
            raise ModelError(f"the export {export_dir!r} ({self.family} model) has no signature {name!r}; "
                             f"it has {sorted(self.signatures)}{hint}")
        return self.signatures[name]

    def input_names(self, signature: str) -> tuple[str, ...] | None:
        """The names of the inputs of ``signature``, as the file lists them: sorted (``None``: it lists none)."""
        inputs = (self.signatures.get(signature) or {}).get("inputs")
        return tuple(inputs) if isinstance(inputs, Mapping) else None

    def batched_inputs(self, signature: str) -> frozenset[str] | None:
        """The inputs of ``signature`` with a batch axis (``None``: the file does not list them)."""
        inputs = (self.signatures.get(signature) or {}).get("inputs")
        if not isinstance(inputs, Mapping):
            return None
        return frozenset(name for name, spec in inputs.items()
                         if isinstance(spec, Mapping) and list(spec.get("shape") or [])[:1] == ["batch"])


def parse_export_metadata(text: str | bytes, *, path: str) -> ExportMetadata:
    """Parses the text of a ``metadata.json`` read from ``path``.

    Raises:
        ModelError: If it is not valid JSON or not a tfaural metadata file (naming ``path``).
    """
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelError(f"{path}: not valid JSON ({err})") from None
    return ExportMetadata.from_dict(data, path=path)


def read_export_metadata(
    export_dir: str | os.PathLike[str], *, read_bytes: Callable[[str], bytes] | None = None,
) -> ExportMetadata:
    """Reads ``EXPORT_DIR/assets/metadata.json`` (``export_dir`` is one version directory).

    Args:
        export_dir: The export version directory (a local path, or a URI that ``read_bytes`` reads).
        read_bytes: Reads a whole file (e.g. ``beam_jobs.io.read_bytes``); default: the local filesystem.

    Raises:
        ModelError: If the file is missing or unreadable, not valid JSON or not a tfaural metadata file.
    """
    folder = os.fspath(export_dir).rstrip("/") or "/"
    path = f"{folder}/{EXPORT_METADATA_FILE}" if "://" in folder else os.path.join(folder, EXPORT_METADATA_FILE)
    try:
        text = (read_bytes or _local_bytes)(path)
    except OSError as err:
        missing = isinstance(err, FileNotFoundError) or "not found" in str(err).lower() or "no such" in str(err).lower()
        if missing:
            raise ModelError(
                f"{folder!r} is not a tfaural SavedModel export: {EXPORT_METADATA_FILE} is missing "
                "(pass the version directory, e.g. EXPORT_BASE/1, written by `python -m export`)") from None
        raise ModelError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    return parse_export_metadata(text, path=path)


def resolve_export_dir(
    path: str | os.PathLike[str], *, exists: Callable[[str], bool] = os.path.exists,
    children: Callable[[str], Iterable[str]] = os.listdir,
) -> str:
    """The export version directory ``path`` stands for.

    ``path`` itself if it holds ``assets/metadata.json``; else, as TF Serving does with a model's
    base path, its newest version: the entry ``<N>`` with the largest number N that holds one
    (``EXPORT_BASE`` → ``EXPORT_BASE/2``); else ``path`` unchanged, for the reader to say what is missing.

    Args:
        path: An export version directory or an export base folder (local path or URI).
        exists: Whether a file exists (default: the local filesystem; e.g. Beam's ``FileSystems.exists``).
        children: The entry names of a folder (default :func:`os.listdir`); an ``OSError`` counts as none.

    Returns:
        The version directory, without a trailing slash.
    """
    folder = os.fspath(path).rstrip("/") or "/"

    def join(*parts: str) -> str:
        return "/".join((folder, *parts)) if "://" in folder else os.path.join(folder, *parts)

    if exists(join(EXPORT_METADATA_FILE)):
        return folder
    try:
        names = [str(name).rstrip("/") for name in children(folder)]
    except OSError:
        return folder
    for name in sorted((name for name in names if name.isdigit()), key=int, reverse=True):  # newest first
        if exists(join(name, EXPORT_METADATA_FILE)):
            return join(name)
    return folder


def export_metadata_text(metadata: Mapping[str, Any]) -> str:
    """The text of ``metadata.json`` for the content ``metadata`` (sorted keys, 2-space indent, final newline).

    Raises:
        ModelError: If ``metadata`` lacks what :class:`ExportMetadata` needs (checked before anything is written).
    """
    ExportMetadata.from_dict(metadata, path="metadata.json (being written)")
    return json.dumps(metadata, indent=2, sort_keys=True) + "\n"


# ============================================================================ a job's manifest.jsonl and job.json

#: File names in a catalogue job's output folder.
MANIFEST_FILE = "manifest.jsonl"
JOB_FILE = "job.json"
#: A track's status in the manifest.
OK = "ok"
FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    """One line of a job's ``manifest.jsonl``: what happened to one input track.

    Attributes:
        path: The input file, as matched or as the input manifest named it.
        track_id: The catalogue's track id.
        name: The track's file-system-safe output name (its folder or file stem).
        status: :data:`OK` or :data:`FAILED`.
        outputs: Files written for the track, relative to the output folder (``ok`` only).
        reused: An earlier run's result was kept (``--skip-existing``; ``ok`` only).
        error: Why it failed, for people (``failed`` only).
        error_type: The error's type, e.g. ``"AudioDecodeError"`` (``failed`` only).
        stage: Where it failed: ``"decode"``, ``"inference"``, ``"write"`` or ``"pipeline"`` (``failed`` only).
    """

    path: str
    track_id: str
    name: str
    status: str
    outputs: tuple[str, ...] = ()
    reused: bool = False
    error: str | None = None
    error_type: str | None = None
    stage: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the line: path, track_id, name, status, and outputs (``ok``) or the error."""
        row: dict[str, Any] = {"path": self.path, "track_id": self.track_id, "name": self.name, "status": self.status}
        if self.status == OK:
            row["outputs"] = list(self.outputs)
            if self.reused:
                row["reused"] = True
        else:
            row.update(error=self.error, error_type=self.error_type, stage=self.stage)
        return row

    def to_line(self) -> str:
        """The line as the jobs write it (sorted keys, UTF-8 kept, final newline)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, where: str) -> ManifestRow:
        """Checks and types one parsed line.

        Raises:
            DataError: Naming ``where`` (file and line) if it is not a manifest row.
        """
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
        status, path = data.get("status"), data.get("path")
        if not isinstance(status, str) or not isinstance(path, str):
            raise DataError(f"{where}: not a manifest row (it needs a \"path\" and a \"status\")")
        outputs = data.get("outputs") or []
        if not isinstance(outputs, list):
            raise DataError(f"{where}: outputs is not a list of files")

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(path=path, track_id=str(data.get("track_id") or path), name=str(data.get("name") or ""),
                   status=status, outputs=tuple(str(o) for o in outputs), reused=bool(data.get("reused")),
                   error=text("error"), error_type=text("error_type"), stage=text("stage"))

    def describe_failure(self) -> str:
        """``"AudioDecodeError (decode): reason"`` for a failed row."""
        reason = self.error or f"status {self.status!r}"
        prefix = f"{self.error_type} ({self.stage})" if self.error_type and self.stage else (self.error_type or "")
        if prefix and not reason.startswith(self.error_type or ""):
            return f"{prefix}: {reason}"
        return reason


def manifest_text(rows: Iterable[ManifestRow]) -> str:
    """The content of ``manifest.jsonl``: one line per row, in the order given."""
    return "".join(row.to_line() for row in rows)


def json_lines(text: str) -> list[str]:
    """The lines of a JSON Lines text: split at ``\\n`` only. ``str.splitlines()`` also splits at U+2028,
    U+0085 and other characters that JSON written with ``ensure_ascii=False`` keeps raw inside its strings (a
    path may hold them). A ``\\r`` left at a line's end is whitespace to ``json.loads``."""
    return text.split("\n")


def parse_manifest(text: str, *, path: str) -> list[ManifestRow]:
    """Reads the content of a ``manifest.jsonl`` (blank lines are skipped).

    Raises:
        DataError: Naming ``path`` and the line, for a line that is not JSON or not a manifest row.
    """
    return list(iter_manifest(json_lines(text), path=path))


def iter_manifest(lines: Iterable[str], *, path: str) -> Iterator[ManifestRow]:
    """The rows of a ``manifest.jsonl`` read line by line (e.g. from an open file: a catalogue's manifest
    need not fit in memory); blank lines are skipped.

    Raises:
        DataError: Naming ``path`` and the line, for a line that is not JSON or not a manifest row.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as err:
            raise DataError(f"{path}, line {number}: not valid JSON ({err})") from None
        yield ManifestRow.from_dict(data, where=f"{path}, line {number}")


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """A catalogue job's ``job.json``: what ran, on what, with which model and settings.

    Every entry but ``job`` may be ``None`` (absent from a hand-made record).

    Attributes:
        job: The job's name (``"tag"``, ``"auralise"``, ``"extract_features"``).
        created: ISO-8601 UTC time the run started.
        tfaural_version: Version of tfaural that ran it.
        input: ``--input`` (``None`` with ``--manifest``).
        manifest: ``--manifest`` (``None`` with ``--input``).
        model_dir: The export version directory.
        model: What identifies the model (``model_dir``, ``run_id``, ``exported``; compared by ``--skip-existing``).
        metadata: The export's ``metadata.json``, as the file has it.
        settings: The job's settings that determine its outputs (compared by ``--skip-existing``).
        extra: Job-specific entries at the top level (e.g. auralise's ``layers``, extract_features'
            ``feature_layout``).
    """

    job: str
    created: str | None
    tfaural_version: str | None
    input: str | None
    manifest: str | None
    model_dir: str | None
    model: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None
    settings: Mapping[str, Any] | None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _FIELDS = ("job", "created", "tfaural_version", "input", "manifest", "model_dir", "model", "metadata", "settings")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, every entry at the top level."""
        return {**{key: getattr(self, key) for key in self._FIELDS}, **dict(self.extra)}

    def to_text(self) -> str:
        """The content of ``job.json`` (sorted keys, 2-space indent, final newline)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def export_metadata(self) -> ExportMetadata | None:
        """The model's metadata, typed (``None`` if the record has none)."""
        return ExportMetadata.from_dict(self.metadata, path=f"{JOB_FILE} (metadata)") if self.metadata else None


def _json_object(text: str, *, path: str) -> dict[str, Any]:
    """The JSON object in ``text`` (read from ``path``).

    Raises:
        DataError: Naming ``path`` if ``text`` is not JSON or not an object.
    """
    try:
        data = json.loads(text)
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def parse_job_record(text: str, *, path: str) -> JobRecord:
    """Reads the content of a ``job.json``.

    Raises:
        DataError: Naming ``path`` if it is not JSON or not a job record (no ``job`` name).
    """
    data = _json_object(text, path=path)
    if not isinstance(data.get("job"), str):
        raise DataError(f"{path}: not a job record (no \"job\" name)")

    def mapping(key: str) -> Mapping[str, Any] | None:
        value = data.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise DataError(f"{path}: {key} is {type(value).__name__}, not an object")
        return value

    def text_of(key: str) -> str | None:
        value = data.get(key)
        return None if value is None else str(value)

    return JobRecord(job=data["job"], created=text_of("created"), tfaural_version=text_of("tfaural_version"),
                     input=text_of("input"),
                     manifest=text_of("manifest"), model_dir=text_of("model_dir"), model=mapping("model"),
                     metadata=mapping("metadata"), settings=mapping("settings"),
                     extra={k: v for k, v in data.items() if k not in JobRecord._FIELDS})


# ============================================================================ the auralise job's track.json

#: Written last in each track's folder: its presence means the track is complete.
TRACK_FILE = "track.json"


def finite_or_none(value: Any) -> float | None:
    """A finite float, or ``None`` for anything else (``null``, text, NaN)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclasses.dataclass(frozen=True)
class FeatureRecord:
    """One auralised feature in a ``track.json``.

    Attributes:
        feature: Feature-map index within its layer.
        file: The auralisation, relative to the track's folder (``layer<L>/feature<K>.wav``).
        spectrogram: Its PNG, relative to the track's folder (``None``: none drawn).
        activation: The feature map's largest activation on the excerpt (``None``: the export gives none).
        peak: Peak amplitude of the auralisation before peak normalisation.
        silent: The deconvolution was all zero (the file is silence).
    """

    feature: int
    file: str
    spectrogram: str | None = None
    activation: float | None = None
    peak: float | None = None
    silent: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the entry."""
        return {"feature": self.feature, "file": self.file, "spectrogram": self.spectrogram,
                "activation": self.activation, "peak": self.peak, "silent": self.silent}


@dataclasses.dataclass(frozen=True)
class TrackRecord:
    """A track's ``track.json``: the excerpt that was auralised and every file written for it.

    Attributes:
        track_id: The catalogue's track id (``""`` if a hand-made record has none).
        path: The input audio file.
        sample_rate: Sample rate of the written audio in Hz.
        offset_seconds: Start of the excerpt in the input, in seconds.
        clip_seconds: Length of the excerpt, in seconds (shorter than asked if the track is).
        original: The excerpt, relative to the track's folder (``original.wav``).
        original_spectrogram: Its PNG (``None``: none drawn).
        layers: Layer -> its features, in the order written (ascending feature index).
        checksums: File (relative to the track's folder) -> SHA-256 hex of its content (``None``: not recorded).
        tags: ``(label, score)`` of the excerpt's best tags, best first (``()``: none asked for).
        attribution: Label -> layer -> ``(feature, contribution)``, largest first (``None``: none asked for).
        padded_seconds: Zeros at the end of the excerpt, in seconds (a track shorter than the model needs,
            zero-padded with ``--pad-short``; listed only if not 0).
        source: The size and modification time of the input file when it was decoded
            (``beam_jobs.io.source_stamp``; ``None``: not recorded): a rerun with ``--skip-existing``
            keeps the track only if the file still has them.
    """

    track_id: str
    path: str
    sample_rate: int | None
    offset_seconds: float | None
    clip_seconds: float | None
    original: str | None
    original_spectrogram: str | None
    layers: Mapping[int, tuple[FeatureRecord, ...]]
    checksums: Mapping[str, str] | None = None
    tags: tuple[tuple[str, float], ...] = ()
    attribution: Mapping[str, Mapping[int, tuple[tuple[int, float], ...]]] | None = None
    padded_seconds: float = 0.0
    source: str | None = None

    def files(self) -> list[str]:
        """Every file the record lists (``track.json`` itself excluded), relative to the track's folder."""
        files = [self.original, self.original_spectrogram]
        for entries in self.layers.values():
            for entry in entries:
                files += [entry.file, entry.spectrogram]
        return [f for f in files if f]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (``tags`` and ``attribution`` only when the job asked for them)."""
        data: dict[str, Any] = {
            "track_id": self.track_id, "path": self.path, "sample_rate": self.sample_rate,
            "offset_seconds": self.offset_seconds, "clip_seconds": self.clip_seconds, "original": self.original,
            "original_spectrogram": self.original_spectrogram,
            "layers": {str(layer): [entry.to_dict() for entry in entries] for layer, entries in self.layers.items()},
            "checksums": None if self.checksums is None else dict(self.checksums),
        }
        if self.padded_seconds > 0:
            data["padded_seconds"] = round(self.padded_seconds, 6)
        if self.source is not None:
            data["source"] = self.source
        if self.attribution is not None:
            data["tags"] = [{"label": label, "score": score} for label, score in self.tags]
            data["attribution"] = {
                label: {str(layer): [{"feature": f, "contribution": c} for f, c in entries]
                        for layer, entries in per_layer.items()}
                for label, per_layer in self.attribution.items()
            }
        return data

    def to_text(self) -> str:
        """The content of ``track.json`` (sorted keys, 1-space indent, final newline)."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"


def parse_track_record(text: str, *, path: str) -> TrackRecord:
    """Reads the content of a ``track.json``.

    Entries the report can do without (``sample_rate``, ``activation``, ``checksums``, ...) may be missing;
    the layers, tags and attribution must have their shapes.

    Raises:
        DataError: Naming ``path`` and the part that is malformed.
    """
    data = _json_object(text, path=path)
    layers_data = data.get("layers") or {}
    if not isinstance(layers_data, dict):
        raise DataError(f"{path}: 'layers' must map layer numbers to lists of features")
    layers: dict[int, tuple[FeatureRecord, ...]] = {}
    for key, items in layers_data.items():
        try:
            layers[int(key)] = tuple(
                FeatureRecord(feature=int(item["feature"]), file=str(item["file"]),
                              spectrogram=str(item["spectrogram"]) if item.get("spectrogram") else None,
                              activation=finite_or_none(item.get("activation")),
                              peak=finite_or_none(item.get("peak")), silent=bool(item.get("silent", False)))
                for item in items)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(
                f"{path}: layer {key!r} is malformed ({type(err).__name__}: {err}); expected "
                '{"<layer>": [{"feature": K, "file": "layer<L>/feature<K>.wav", ...}, ...]}'
            ) from None
    try:
        tags = tuple((str(item["label"]), float(item["score"])) for item in data.get("tags") or [])
        attribution = None if data.get("attribution") is None else {
            str(label): {int(layer): tuple((int(e["feature"]), float(e["contribution"])) for e in entries)
                         for layer, entries in per_layer.items()}
            for label, per_layer in data["attribution"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(
            f"{path}: 'tags' or 'attribution' is malformed ({type(err).__name__}: {err}); expected "
            '[{"label": name, "score": s}, ...] and {"<label>": {"<layer>": [{"feature": K, "contribution": c}]}}'
        ) from None
    checksums = data.get("checksums")
    if checksums is not None and not (isinstance(checksums, dict)
                                      and all(isinstance(v, str) for v in checksums.values())):
        raise DataError(f"{path}: 'checksums' must map file names to SHA-256 hex digests")
    rate = data.get("sample_rate")

    def text_or_none(key: str) -> str | None:
        value = data.get(key)
        return str(value) if value else None

    return TrackRecord(
        track_id=str(data.get("track_id") or ""), path=str(data.get("path") or ""),
        sample_rate=int(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0 else None,
        offset_seconds=finite_or_none(data.get("offset_seconds")),
        clip_seconds=finite_or_none(data.get("clip_seconds")),
        original=text_or_none("original"), original_spectrogram=text_or_none("original_spectrogram"),
        layers=layers, checksums=checksums, tags=tags, attribution=attribution,
        padded_seconds=finite_or_none(data.get("padded_seconds")) or 0.0,
        source=data["source"] if isinstance(data.get("source"), str) else None,
    )
