"""What an export promises: the signature table and ``assets/metadata.json``.

:data:`SIGNATURE_INPUTS` is the one description of every signature's inputs; the
serving module builds its ``input_signature`` from it, the clients
(:mod:`export.client`) convert numpy arrays with it, and ``metadata.json``
documents it. :func:`build_metadata` writes everything a consumer of the
SavedModel (TF Serving clients, the Beam jobs) needs to know without importing
tfaural: model family and config, sample rate, segment length, STFT settings,
input scaling, label names, limits and per-call budgets (:mod:`export.budget`),
deconvolvable layers and the signatures' input and output specs.

Reading it is :func:`tfaural.formats.read_export_metadata`'s job (one reader for every consumer).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Sequence
from typing import Any

from export.budget import WorkBudget
from tfaural.config import ChoiConfig, Config, KerasConfig, MusicnnConfig, SampleCNNConfig, model_config_to_dict
from tfaural.errors import ExportError
from tfaural.formats import EXPORT_LABELS_FILE, EXPORT_METADATA_FILE, TAGGING_SIGNATURES, export_metadata_text
from tfaural.training.run import RunInfo

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "LABELS_FILE",
    "TOP_K",
    "InputSpec",
    "SIGNATURE_INPUTS",
    "COLUMNAR_ONLY",
    "SIGNATURE_DESCRIPTIONS",
    "family_of",
    "signature_names",
    "SIGNATURE_SETS",
    "resolve_signatures",
    "MAX_TOP_TAGS",
    "build_metadata",
    "write_metadata_files",
]

#: Version of the metadata.json layout (bumped on incompatible changes; 2: per-call budgets,
#: max_deconv_samples counts the whole batch, unknown-rank layer/features/mode checked in-graph).
FORMAT_VERSION = 2
#: Paths inside an export version directory (the format's owner is :mod:`tfaural.formats`).
METADATA_FILE = EXPORT_METADATA_FILE
LABELS_FILE = EXPORT_LABELS_FILE
#: ``labels`` output width: the names of the ``min(TOP_K, n_labels)`` best scores.
TOP_K = 5


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One named input of a signature.

    Attributes:
        name: Input name (the key in REST ``inputs``/``instances`` and gRPC ``inputs``).
        dtype: ``"float32"``, ``"int32"`` or ``"string"``.
        shape: Symbolic shape, e.g. ``("batch", "samples")``; ``()`` for a scalar.
        batched: Whether axis 0 is the batch axis (REST row format needs every input batched).
        graph_shape: The shape of the exported ``TensorSpec`` (``None``: unknown rank,
            checked in-graph so that a wrong rank fails with a readable message).
        description: What the input holds, with units.
    """

    name: str
    dtype: str
    shape: tuple[str, ...]
    batched: bool
    graph_shape: tuple[int | None, ...] | None
    description: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``metadata.json``."""
        return {"dtype": self.dtype, "shape": list(self.shape), "description": self.description}


_WAVEFORM = InputSpec(
    "waveform", "float32", ("batch", "samples"), True, None,
    "mono waveform in [-1, 1] at the model's sample rate; at least one segment, at most max_seconds; "
    "batch x samples at most max_request_samples",
)
_WAV = InputSpec(
    "wav", "string", ("batch",), True, None,
    "bytes of 16-bit PCM WAV files at the model's sample rate (multi-channel files are averaged to mono)",
)
# layer, features and mode are exported with unknown rank too: a wrong rank fails in-graph with a message
# naming the input and the expected shape, not inside TensorFlow's argument binding.
_LAYER = InputSpec("layer", "int32", (), False, None, "conv block to deconvolve, one of deconvolvable_layers")
_FEATURES = InputSpec(
    "features", "int32", ("k",), False, None,
    "distinct feature-map indices of that layer, each in [0, features_per_layer); "
    "k x batch x samples at most max_deconv_feature_samples",
)
_MODE = InputSpec("mode", "string", (), False, None, '"phase" (the paper: original phase) or "mask" (soft mask)')
_TOP_TAGS = InputSpec(
    "top_tags", "int32", (), False, None,
    "how many of the clip's best labels to explain, 1 to min(10, number of labels); "
    "top_tags x batch x samples at most max_deconv_feature_samples",
)
#: Most labels one ``attribute`` call explains.
MAX_TOP_TAGS = 10
_DECONV_WAVEFORM = dataclasses.replace(
    _WAVEFORM, description="mono waveform in [-1, 1]; at least min_deconv_samples (the shortest clip whose maps "
    "at the deepest deconvolvable layer are not empty; at most one segment); batch x samples at most "
    "max_deconv_samples (max_deconv_seconds in all)",
)
_ATTRIBUTE_WAVEFORM = dataclasses.replace(
    _WAVEFORM, description="mono waveform in [-1, 1]; at least one segment (it is scored); batch x samples at most "
    "max_deconv_samples (max_deconv_seconds in all)",
)

#: Inputs of every signature, in call order.
SIGNATURE_INPUTS: dict[str, tuple[InputSpec, ...]] = {
    "serving_default": (_WAVEFORM,),
    "serving_wav": (_WAV,),
    "features": (_WAVEFORM,),
    "deconvolve": (_DECONV_WAVEFORM, _LAYER, _FEATURES),
    "auralise": (_DECONV_WAVEFORM, _LAYER, _FEATURES, _MODE),
    "attribute": (_ATTRIBUTE_WAVEFORM, _LAYER, _TOP_TAGS),
}

#: Signatures with unbatched inputs: REST clients must use the columnar ``inputs`` format.
COLUMNAR_ONLY = frozenset(name for name, specs in SIGNATURE_INPUTS.items() if not all(s.batched for s in specs))

SIGNATURE_DESCRIPTIONS: dict[str, str] = {
    "serving_default": "song-level scores: the waveform is cut into whole non-overlapping segments in-graph "
    "(a trailing partial segment is dropped) and the segment predictions are averaged",
    "serving_wav": "as serving_default, for 16-bit PCM WAV file bytes (decoded in-graph with tf.audio.decode_wav)",
    "features": "multi-level transfer features: the last three conv layers, each max- and mean-pooled over all "
    "positions of all segments, and their concatenation",
    "deconvolve": "Zeiler-Fergus deconvolution of the chosen feature maps of one conv block, down to the model's "
    "input space (the whole input, not segmented)",
    "auralise": "the deconvolved features turned back into sound, peak-normalised to 0.9 per feature; a feature "
    "at or below silence_relative (-144 dB) of the input's peak, or of an input at or below input_silence_peak "
    "(-120 dBFS), is flagged silent and returned as silence",
    "attribute": "which feature maps of one layer a clip's best labels come from: for each of the top_tags best "
    "labels of the clip (segment-averaged scores, as serving_default), each feature's contribution, the sum over "
    "its map of activation x gradient of the label's score (first-order Taylor: the part of the score that flows "
    "through that feature), averaged over the clip's segments",
}


def family_of(config: Config) -> str:
    """``"choi"``, ``"samplecnn"``, ``"mel-frame"``, ``"raw-frame"``, ``"musicnn"`` (imported taggers) or
    ``"keras"`` (any Keras model imported as a run).

    Raises:
        ExportError: For configs the exporter does not support (e.g. aggregation models).
    """
    if isinstance(config, ChoiConfig):
        return "choi"
    if isinstance(config, SampleCNNConfig):
        return config.family
    if isinstance(config, MusicnnConfig):
        return "musicnn"
    if isinstance(config, KerasConfig):
        return "keras"
    if config.kind == "aggregation":
        raise ExportError("cannot export a --transfer features run (its classifier on the frozen multi-level "
                          "features of other runs): the exporter takes the Choi CNN, the SampleCNN family, musicnn's "
                          "models and imported Keras models; export the runs it builds on (--init-from) instead")
    raise ExportError(f"cannot export a {config.kind!r} model: the exporter takes the Choi CNN, the SampleCNN family, "
                      "musicnn's models and imported Keras models")


def signature_names(family: str) -> tuple[str, ...]:
    """The signatures an export of ``family`` has.

    The mel-frame model cannot be auralised (no phase).
    """
    names = ("serving_default", "serving_wav", "features", "deconvolve", "auralise", "attribute")
    return tuple(n for n in names if n != "auralise") if family == "mel-frame" else names


#: Named sets of signatures an export can be limited to (``python -m export --signatures``):
#: ``all`` (the default) or ``tagging``, the scoring and feature signatures alone (what TF Serving
#: clients and the tag / extract_features jobs call; no deconvolution graphs: a smaller, faster
#: export that loads faster).
SIGNATURE_SETS: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "tagging": TAGGING_SIGNATURES,
}


def resolve_signatures(family: str, requested: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The signatures an export of ``family`` gets, in the canonical order of :func:`signature_names`.

    Args:
        family: Model family (:func:`family_of`).
        requested: ``None`` or ``"all"``: every signature of the family; a set name of
            :data:`SIGNATURE_SETS` (``"tagging"``); a comma-separated string or a sequence of
            signature names. ``serving_default`` is always part of an export (TF Serving's default).

    Returns:
        The signature names.

    Raises:
        ExportError: An unknown set or signature name, one the family does not have (e.g.
            ``auralise`` of a mel-frame model), or a list without ``serving_default``.
    """
    available = signature_names(family)
    if requested is None:
        return available
    if isinstance(requested, str):
        text = requested.strip()
        if text in SIGNATURE_SETS:
            chosen = SIGNATURE_SETS[text]
            return available if chosen is None else tuple(n for n in available if n in chosen)
        names = [part.strip() for part in text.split(",") if part.strip()]
    else:
        names = [str(name) for name in requested]
    if not names:
        raise ExportError(f"signatures={requested!r} names no signature: expected {', '.join(SIGNATURE_SETS)} "
                          f"or a comma-separated list of {', '.join(available)}")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ExportError(
            f"signatures {unknown} do not exist for a {family} model: expected {', '.join(SIGNATURE_SETS)} or "
            f"a comma-separated list of {', '.join(available)}"
        )
    if "serving_default" not in names:
        raise ExportError(f"signatures={requested!r} leaves out serving_default, which every export has "
                          "(TF Serving's default signature)")
    return tuple(n for n in available if n in names)


def _output(dtype: str, shape: list[str | int], description: str) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "description": description}


def _signature_outputs(
    family: str, *, n_labels: int, top_k: int, levels: list[dict[str, Any]], n_features: int, deconv_shape: list[Any],
    spectral: bool = False,
) -> dict[str, dict[str, Any]]:
    scores = {
        "scores": _output("float32", ["batch", n_labels], "segment-averaged model outputs, in label order"),
        "labels": _output("string", ["batch", top_k], "label names of the top_k scores, best first"),
    }
    features: dict[str, Any] = {
        "features": _output(
            "float32", ["batch", n_features], "concatenation: level1_max, level1_mean, level2_max, ..."
        ),
    }
    for index, level in enumerate(levels, start=1):
        for pool in ("max", "mean"):
            features[f"level{index}_{pool}"] = _output(
                "float32", ["batch", level["channels"]], f"{pool} of layer {level['layer']} over all positions"
            )
    deconvolve = {"deconvolved": _output("float32", deconv_shape, "deconvolved maps in the model's input space")}
    if family == "choi":
        deconvolve["spectrogram"] = _output(
            "float32", ["batch", "freq", "frames"], "linear STFT magnitude of the input"
        )
    elif family == "musicnn" or (family == "keras" and spectral):
        deconvolve["spectrogram"] = _output(
            "float32", ["batch", "mels", "frames"], "mel power of the input (before the model's compression)"
        )
    activation = _output("float32", ["batch", "k"], "maximum of each selected feature map (response strength)")
    deconvolve["activation"] = activation
    auralise = {
        "audio": _output("float32", ["batch", "k", "samples"], "auralised features, peak 0.9 (all zero if silent)"),
        "silent": _output(
            "bool", ["batch", "k"],
            "the feature's auralisation peaks at or below silence_relative x the input's peak, or the input's peak "
            "is at or below input_silence_peak (digital silence)",
        ),
        "peak": _output("float32", ["batch", "k"], "peak amplitude before normalisation (0 if silent)"),
        "activation": activation,
    }
    attribute = {
        "scores": scores["scores"],
        "tags": _output("int32", ["batch", "top_tags"], "indices of the clip's best labels, best first"),
        "labels": _output("string", ["batch", "top_tags"], "their names"),
        "contributions": _output(
            "float32", ["batch", "top_tags", "features_per_layer"],
            "each feature map's contribution to each of those labels' scores (activation x gradient, summed over "
            "the map, averaged over segments); the largest are the features behind the label",
        ),
    }
    outputs = {
        "serving_default": scores, "serving_wav": scores, "features": features,
        "deconvolve": deconvolve, "auralise": auralise, "attribute": attribute,
    }
    return {name: outputs[name] for name in signature_names(family)}


def build_metadata(
    info: RunInfo,
    *,
    family: str,
    stft: dict[str, Any] | None,
    input_scaling: dict[str, Any] | None,
    max_seconds: float,
    mel: dict[str, Any] | None = None,
    max_deconv_seconds: float,
    min_deconv_samples: int | None = None,
    budget: WorkBudget,
    deconvolvable_layers: tuple[int, ...],
    features_per_layer: dict[int, int],
    feature_levels: list[dict[str, Any]],
    top_k: int,
    deconv_shape: list[Any],
    signatures: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The content of ``assets/metadata.json`` (see the module docstring).

    Args:
        info: The training run's description.
        family: Model family (:func:`family_of`).
        stft: STFT settings of spectrogram models (``None`` for waveform models).
        input_scaling: ``{"mode": "linear"|"log"|"log10", "log_c": C}`` for spectrogram models, else ``None``.
        mel: The mel filterbank of mel-input models (``{"n_mels", "fmin", "fmax", "power", "norm"}``).
        max_seconds: Longest accepted input of the scoring and feature signatures, in seconds.
        max_deconv_seconds: Longest accepted input of ``deconvolve`` and ``auralise`` (batch x length), in seconds.
        min_deconv_samples: Shortest accepted input of ``deconvolve`` and ``auralise``, in samples (``None``: one
            segment).
        budget: The per-call budgets (:mod:`export.budget`).
        deconvolvable_layers: Valid ``layer`` values.
        features_per_layer: Number of feature maps of each layer.
        feature_levels: ``[{"name": "level1", "layer": "pool3", "channels": 64}, ...]``.
        top_k: Width of the ``labels`` output.
        deconv_shape: Symbolic shape of the ``deconvolved`` output.
        signatures: The signatures the export has (``None``: all of the family's; see
            :func:`resolve_signatures`).

    Returns:
        A JSON-serialisable dict.
    """
    import tensorflow as tf

    from tfaural.auralise import INPUT_SILENCE_PEAK, SILENCE_RELATIVE

    sample_rate = info.audio.sample_rate
    shortest = int(info.segment.length if min_deconv_samples is None else min_deconv_samples)
    chosen = resolve_signatures(family, signatures)
    described: dict[str, Any] = {}
    outputs = _signature_outputs(
        family, n_labels=len(info.labels), top_k=top_k, levels=feature_levels,
        n_features=sum(2 * int(level["channels"]) for level in feature_levels), deconv_shape=deconv_shape,
        spectral=mel is not None,
    )
    for name in chosen:
        described[name] = {
            "description": SIGNATURE_DESCRIPTIONS[name],
            "rest_format": "columnar" if name in COLUMNAR_ONLY else "row or columnar",
            "inputs": {spec.name: spec.to_dict() for spec in SIGNATURE_INPUTS[name]},
            "outputs": outputs[name],
        }
    return {
        "format_version": FORMAT_VERSION,
        "family": family,
        "model_config": model_config_to_dict(info.model),
        "sample_rate": sample_rate,
        "segment_length": info.segment.length,
        "segment_hop": info.segment.step,
        "segment_seconds": info.segment.length / sample_rate,
        "stft": stft,
        "mel": mel,
        "input_scaling": input_scaling,
        "labels": list(info.labels),
        "task": info.task,
        "top_k": top_k,
        "max_seconds": float(max_seconds),
        "max_samples": int(round(max_seconds * sample_rate)),
        "max_deconv_seconds": float(max_deconv_seconds),
        "max_deconv_samples": int(round(max_deconv_seconds * sample_rate)),
        "min_deconv_samples": shortest,
        "min_deconv_seconds": shortest / sample_rate,
        "max_request_seconds": float(budget.max_request_seconds),
        "max_request_samples": int(round(budget.max_request_seconds * sample_rate)),
        "max_deconv_feature_seconds": float(budget.max_deconv_feature_seconds),
        "max_deconv_feature_samples": int(round(budget.max_deconv_feature_seconds * sample_rate)),
        "deconv_chunk_elements": int(budget.deconv_chunk_elements),
        "silence_relative": SILENCE_RELATIVE,
        "input_silence_peak": INPUT_SILENCE_PEAK,
        "deconvolvable_layers": list(deconvolvable_layers),
        "features_per_layer": {str(layer): int(n) for layer, n in features_per_layer.items()},
        "feature_levels": feature_levels,
        "n_features": sum(2 * int(level["channels"]) for level in feature_levels),
        "signatures": described,
        "run_id": info.run_id,
        "run_created": info.created,
        "run_extra": info.extra,
        "tfaural_version": info.tfaural_version,
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow_version": tf.__version__,
    }


def write_metadata_files(directory: str, metadata: dict[str, Any]) -> tuple[str, str]:
    """Writes ``labels.txt`` (one name per line, in output order) and ``metadata.json`` into ``directory``.

    Returns:
        ``(labels_path, metadata_path)``.
    """
    os.makedirs(directory, exist_ok=True)
    labels_path = os.path.join(directory, os.path.basename(LABELS_FILE))
    with open(labels_path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{label}\n" for label in metadata["labels"])
    metadata_path = os.path.join(directory, os.path.basename(METADATA_FILE))
    with open(metadata_path, "w", encoding="utf-8") as handle:
        handle.write(export_metadata_text(metadata))
    return labels_path, metadata_path
