"""Import musicnn's four published taggers (ISC licence) as ordinary tfaural runs.

The ``musicnn`` wheel (``pip install --no-deps musicnn==0.1.0``: its metadata pins
numpy < 1.17, which cannot be installed beside numpy 2) ships, for each model, a TF1
checkpoint (``.index``/``.data-00000-of-00001``), the training graph (``.meta``),
``config.json`` and ``experiment.result``. tfaural never imports musicnn's Python
modules (they need ``tf.compat.v1.layers``, gone with Keras 3): it finds the
distribution's files with :mod:`importlib.metadata`, reads the label lists from
``configuration.py`` as text (:mod:`ast`), and restores the weights *by prefix*
(``<model folder>/``: the file names start with a dot, and the ``checkpoint`` index
file points to the publisher's machine) with ``tf.compat.v1.train.NewCheckpointReader``
into the Keras models of :mod:`tfaural.models.musicnn`. A missing, truncated or
mismatched variable is a :class:`~tfaural.errors.ModelError` naming the model and
the variable: never silently random weights (musicnn's own extractor swallows
restore failures with a bare ``except``).

:func:`run_original_graph` runs the publisher's own graph (the ``.meta`` written by
TF 1.11/1.12, loaded with ``import_meta_graph`` once its ``_output_shapes``
attributes are stripped) on log-mel patches: the reference that the import is
checked against (:func:`verify_import`, the tests, ``python -m tfaural.pretrained
--verify``).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfaural.config import AudioConfig, MusicnnConfig, SegmentConfig
from tfaural.errors import ModelError
from tfaural.training.run import RunInfo

__all__ = [
    "DISTRIBUTION",
    "INSTALL_COMMAND",
    "PretrainedModel",
    "MODELS",
    "PATCH_FRAMES",
    "PARITY_TOLERANCE",
    "read_meta_graph",
    "read_vgg_pools",
    "locate_model_dir",
    "read_labels",
    "read_published_scores",
    "load_weights",
    "import_model",
    "run_original_graph",
    "verify_import",
]

DISTRIBUTION = "musicnn"
INSTALL_COMMAND = "pip install --no-deps musicnn==0.1.0"
#: Frames of one input patch: 3 s at 16 kHz with hop 256 (musicnn's ``n_frames``).
PATCH_FRAMES = 187
#: Largest accepted difference from the publisher's graph: absolute for the taggram, relative
#: to the peak for embeddings and pooled maps.
PARITY_TOLERANCE = 1e-5


@dataclasses.dataclass(frozen=True)
class PretrainedModel:
    """One published musicnn tagger.

    Attributes:
        name: musicnn's name (``"MTT_vgg"`` ...), also the folder in the wheel.
        architecture: ``"vgg"`` or ``"musicnn"`` (:class:`~tfaural.config.MusicnnConfig`).
        dataset: What it was trained on.
        labels_constant: The name of its label list in musicnn's ``configuration.py``.
    """

    name: str
    architecture: str
    dataset: str
    labels_constant: str

    @property
    def key(self) -> str:
        """The name on the command line: ``musicnn/<name>``."""
        return f"{DISTRIBUTION}/{self.name}"


MODELS: dict[str, PretrainedModel] = {
    m.name: m
    for m in (
        PretrainedModel("MTT_vgg", "vgg", "MagnaTagATune (50 tags)", "MTT_LABELS"),
        PretrainedModel("MSD_vgg", "vgg", "Million Song Dataset (50 tags)", "MSD_LABELS"),
        PretrainedModel("MTT_musicnn", "musicnn", "MagnaTagATune (50 tags)", "MTT_LABELS"),
        PretrainedModel("MSD_musicnn", "musicnn", "Million Song Dataset (50 tags)", "MSD_LABELS"),
    )
}

_CHECKPOINT_FILES = (".index", ".data-00000-of-00001")


# --------------------------------------------------------------------------- locating the files


def _model(name: str) -> PretrainedModel:
    key = name.split("/", 1)[1] if name.startswith(f"{DISTRIBUTION}/") else name
    if key not in MODELS:
        raise ModelError(f"unknown pretrained model {name!r}; expected one of {[m.key for m in MODELS.values()]}")
    return MODELS[key]


def _package_dir(distribution: str = DISTRIBUTION) -> str:
    """The installed ``musicnn`` package folder, found through the distribution's metadata (no import)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the {distribution!r} distribution is not installed; install its weights with: {INSTALL_COMMAND}"
        ) from None
    folder = str(dist.locate_file(DISTRIBUTION))
    if not os.path.isdir(folder):
        raise ModelError(
            f"the {distribution!r} distribution is installed but its package folder {folder!r} is missing; "
            f"reinstall it: {INSTALL_COMMAND} --force-reinstall"
        )
    return folder


def locate_model_dir(name: str, *, distribution: str = DISTRIBUTION) -> str:
    """The folder of model ``name`` inside the installed musicnn distribution.

    Raises:
        ModelError: If musicnn is not installed or the model's checkpoint files are missing.
    """
    model = _model(name)
    folder = os.path.join(_package_dir(distribution), model.name)
    missing = [f for f in _CHECKPOINT_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise ModelError(
            f"{model.key}: checkpoint files {missing} are missing from {folder!r}; reinstall: "
            f"{INSTALL_COMMAND} --force-reinstall"
        )
    return folder


def read_labels(model: PretrainedModel, package_dir: str) -> tuple[str, ...]:
    """The model's tag names, read from musicnn's ``configuration.py`` as text (never imported)."""
    path = os.path.join(package_dir, "configuration.py")
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), filename=path)
    except (OSError, SyntaxError) as err:
        raise ModelError(f"{model.key}: cannot read the tag names from {path!r} ({err})") from None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == model.labels_constant):
            labels = ast.literal_eval(node.value)
            if isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels):
                return tuple(labels)
    raise ModelError(f"{model.key}: {path!r} has no list {model.labels_constant} of tag names")


def read_published_scores(folder: str) -> dict[str, float]:
    """``{"roc_auc": .., "pr_auc": ..}`` from the model's ``experiment.result`` (empty if absent)."""
    path = os.path.join(folder, "experiment.result")
    try:
        with open(path, encoding="utf-8") as handle:
            values = [float(v) for v in re.findall(r"AUC:\s*([0-9.eE+-]+)", handle.read())]
    except (OSError, ValueError):
        return {}
    return dict(zip(("roc_auc", "pr_auc"), values))


def _check_training_config(model: PretrainedModel, folder: str, config: MusicnnConfig) -> dict[str, Any]:
    """Cross-checks the model's ``config.json`` with the front end tfaural rebuilds."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            trained = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{model.key}: cannot read {path!r} ({err})") from None
    rep = trained.get("audio_rep", {})
    expected = {
        "n_frames": (trained.get("n_frames"), config.n_frames),
        "audio_rep.resample_sr": (rep.get("resample_sr"), config.sample_rate),
        "audio_rep.hop": (rep.get("hop"), config.hop_length),
        "audio_rep.n_fft": (rep.get("n_fft"), config.n_fft),
        "audio_rep.n_mels": (rep.get("n_mels"), config.n_mels),
        "audio_rep.spectrogram_type": (rep.get("spectrogram_type"), "mel"),
        "pre_processing": (trained.get("pre_processing"), "logC"),
    }
    wrong = {key: found for key, (found, want) in expected.items() if found != want}
    if wrong:
        raise ModelError(f"{model.key}: {path} describes a front end tfaural does not rebuild: {wrong}")
    return trained


def read_meta_graph(model: PretrainedModel, folder: str) -> Any:
    """The publisher's ``.meta`` graph, with the ``_output_shapes`` attributes that TF 1.11 wrote stripped."""
    from tensorflow.core.protobuf import meta_graph_pb2

    path = os.path.join(folder, ".meta")
    meta = meta_graph_pb2.MetaGraphDef()
    try:
        with open(path, "rb") as handle:
            meta.ParseFromString(handle.read())
    except (OSError, ValueError) as err:  # google.protobuf.message.DecodeError is a ValueError
        raise ModelError(f"{model.key}: cannot read the graph {path!r} ({err})") from None
    for node in meta.graph_def.node:
        node.attr.pop("_output_shapes", None)
    return meta


def read_vgg_pools(model: PretrainedModel, meta: Any) -> tuple[tuple[int, int, int, int], ...]:
    """The five max-pools of a vgg graph as ``(freq size, frames size, freq stride, frames stride)``.

    musicnn's graphs are ``[batch, time, mel, 1]``; tfaural's layout swaps the two axes.
    They differ between the two published vgg models (see :class:`~tfaural.config.MusicnnConfig`).
    """
    pools = {}
    for node in meta.graph_def.node:
        match = re.fullmatch(r"model/max_pooling2d(?:_(\d+))?/MaxPool", node.name)
        if node.op == "MaxPool" and match:
            ksize, strides = list(node.attr["ksize"].list.i), list(node.attr["strides"].list.i)
            pools[int(match.group(1) or 0)] = (ksize[2], ksize[1], strides[2], strides[1])
    if sorted(pools) != list(range(5)):
        raise ModelError(f"{model.key}: expected five max-pool layers in its graph, found {len(pools)}")
    return tuple(pools[i] for i in range(5))


# --------------------------------------------------------------------------- weights


def _transpose_2d(kernel: np.ndarray) -> np.ndarray:
    """A ``[time, freq, in, out]`` kernel of musicnn as ``[freq, time, in, out]`` (tfaural's layout)."""
    return np.transpose(kernel, (1, 0, 2, 3))


def _squeeze_1d(kernel: np.ndarray) -> np.ndarray:
    """A ``[7, channels, 1, out]`` 2D kernel spanning all channels as a Conv1D kernel ``[7, channels, out]``."""
    return kernel[:, :, 0, :]


def _interleaved_to_blocks(n: int) -> np.ndarray:
    """Index map: tfaural's ``[max_0..max_{n-1}, mean_0..]`` position -> musicnn's ``[max_0, mean_0, max_1, ...]``."""
    return np.concatenate([2 * np.arange(n), 2 * np.arange(n) + 1])


def _flatten_rows(frames: int, bands: int, channels: int) -> np.ndarray:
    """Index map of flattened pool outputs: tfaural's ``(band, frame, c)`` order -> musicnn's ``(frame, band, c)``."""
    index = np.arange(frames * bands * channels).reshape(frames, bands, channels)
    return np.transpose(index, (1, 0, 2)).reshape(-1)


@dataclasses.dataclass(frozen=True)
class _Layer:
    keras_name: str
    scope: str  # variable scope in the checkpoint
    kind: str  # "conv" | "dense" | "bn"
    transform: Callable[[np.ndarray], np.ndarray] | None = None  # for kernels
    rows: np.ndarray | None = None  # permutation of the first axis (kernel rows, BN channels)


def _layer_map(config: MusicnnConfig, keras_model: Any) -> list[_Layer]:
    if config.architecture == "vgg":
        pool5 = keras_model.get_layer("pool5").output.shape  # [batch, bands, frames, channels]
        rows = _flatten_rows(int(pool5[2]), int(pool5[1]), int(pool5[3]))
        layers = [_Layer("input_bn", "batch_normalization", "bn")]
        for i in range(1, 6):
            layers += [
                _Layer(f"conv{i}", f"{i}CNN", "conv", _transpose_2d),
                _Layer(f"bn{i}", f"batch_normalization_{i}", "bn"),
            ]
        return [*layers, _Layer("logits", "dense", "dense", rows=rows)]
    pooled = int(keras_model.get_layer("midend").output.shape[-1])
    rows = _interleaved_to_blocks(pooled)
    names = ["timbral1", "timbral2", "temporal1", "temporal2", "temporal3"]
    layers = [_Layer("input_bn", "batch_normalization", "bn")]
    for index, name in enumerate(names):
        layers += [
            _Layer(f"{name}_conv", "conv2d" if index == 0 else f"conv2d_{index}", "conv", _transpose_2d),
            _Layer(f"{name}_bn", f"batch_normalization_{index + 1}", "bn"),
        ]
    for index in (1, 2, 3):
        layers += [
            _Layer(f"midend{index}_conv", f"conv2d_{index + 4}", "conv", _squeeze_1d),
            _Layer(f"midend{index}_bn", f"batch_normalization_{index + 5}", "bn"),
        ]
    return [
        *layers,
        _Layer("pooled_bn", "batch_normalization_9", "bn", rows=rows),
        _Layer("penultimate_dense", "dense", "dense", rows=rows),
        _Layer("penultimate", "batch_normalization_10", "bn"),
        _Layer("logits", "dense_1", "dense"),
    ]


_WEIGHT_NAMES = {"conv": ("kernel", "bias"), "dense": ("kernel", "bias"),
                 "bn": ("gamma", "beta", "moving_mean", "moving_variance")}


def _read_variable(reader: Any, model: PretrainedModel, name: str, shapes: dict[str, list[int]]) -> np.ndarray:
    import tensorflow as tf

    if name not in shapes:
        raise ModelError(f"{model.key}: the checkpoint has no variable {name!r}")
    try:
        value = np.asarray(reader.get_tensor(name))
    except (tf.errors.OpError, IndexError, ValueError) as err:  # a truncated .data file: "Read less bytes ..."
        message = getattr(err, "message", str(err)).splitlines()[0]
        raise ModelError(f"{model.key}: cannot read variable {name!r} ({message}); the checkpoint is damaged, "
                         f"reinstall: {INSTALL_COMMAND} --force-reinstall") from None
    if not np.all(np.isfinite(value)):
        raise ModelError(f"{model.key}: variable {name!r} holds NaN or Inf values")
    return value


def load_weights(keras_model: Any, config: MusicnnConfig, model: PretrainedModel, prefix: str) -> int:
    """Restores the checkpoint at ``prefix`` into ``keras_model``; returns the number of values loaded.

    Raises:
        ModelError: If the checkpoint is unreadable or a variable is missing, truncated,
            not finite or of the wrong shape (named in the message).
    """
    import tensorflow as tf

    try:
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    except (tf.errors.OpError, ValueError) as err:
        message = getattr(err, "message", str(err)).splitlines()[0]
        raise ModelError(f"{model.key}: cannot open the checkpoint {prefix!r} ({message})") from None
    shapes = reader.get_variable_to_shape_map()
    loaded = 0
    for layer in _layer_map(config, keras_model):
        target = keras_model.get_layer(layer.keras_name)
        values = []
        for weight_name in _WEIGHT_NAMES[layer.kind]:
            variable = f"{layer.scope}/{weight_name}"
            value = _read_variable(reader, model, variable, shapes)
            if weight_name == "kernel" and layer.transform is not None:
                value = layer.transform(value)
            if layer.rows is not None and (weight_name == "kernel" or layer.kind == "bn"):
                if value.shape[0] != layer.rows.size:
                    raise ModelError(
                        f"{model.key}: variable {variable!r} has shape {list(value.shape)}; expected "
                        f"{layer.rows.size} rows"
                    )
                value = value[layer.rows]
            values.append(value)
        expected = [tuple(w.shape) for w in target.get_weights()]
        if len(expected) != len(values) or any(v.shape != e for v, e in zip(values, expected)):
            raise ModelError(
                f"{model.key}: variables {layer.scope}/* have shapes {[list(v.shape) for v in values]} but layer "
                f"{layer.keras_name!r} needs {[list(e) for e in expected]}"
            )
        target.set_weights(values)
        loaded += sum(int(v.size) for v in values)
    return loaded


# --------------------------------------------------------------------------- import


def import_model(
    name: str,
    *,
    hop_frames: int | None = None,
    checkpoint_dir: str | None = None,
    distribution: str = DISTRIBUTION,
) -> tuple[Any, RunInfo]:
    """Builds the Keras model of ``name`` with the published weights and its run description.

    Args:
        name: ``"musicnn/MTT_vgg"``, ``"MTT_vgg"``, ... (see :data:`MODELS`).
        hop_frames: Hop between tagging patches in frames (default :data:`DEFAULT_HOP_FRAMES`
            of the architecture: no part of a track is ignored).
        checkpoint_dir: Read the checkpoint, ``config.json`` and ``experiment.result`` from
            this folder instead of the installed distribution's (e.g. a copy); the tag names
            still come from the installed ``configuration.py``.
        distribution: The distribution to look in.

    Returns:
        ``(keras_model, run_info)``.

    Raises:
        ModelError: If musicnn is missing, a file is unreadable or a variable does not fit.
    """
    from tfaural.models.musicnn import build_musicnn
    from tfaural.pretrained.coverage import input_coverage

    model = _model(name)
    if hop_frames is not None and not (isinstance(hop_frames, int) and 1 <= hop_frames <= 10 * PATCH_FRAMES):
        raise ModelError(f"hop_frames={hop_frames!r} is invalid: expected an integer in 1 .. {10 * PATCH_FRAMES}")
    folder = checkpoint_dir if checkpoint_dir is not None else locate_model_dir(model.name, distribution=distribution)
    labels = read_labels(model, _package_dir(distribution))
    config = MusicnnConfig(architecture=model.architecture, n_outputs=len(labels))
    if model.architecture == "vgg":
        config = config.replace(pools=read_vgg_pools(model, read_meta_graph(model, folder)))
    trained = _check_training_config(model, folder, config)
    keras_model = build_musicnn(config, name=f"musicnn_{model.name}")
    n_values = load_weights(keras_model, config, model, os.path.join(folder, ""))
    coverage = input_coverage(keras_model)
    hop = coverage.covering_hop if hop_frames is None else hop_frames
    version = _distribution_version(distribution)
    info = RunInfo(
        model=config,
        labels=labels,
        task="multi-label",
        audio=AudioConfig(sample_rate=config.sample_rate, mono=True),
        segment=SegmentConfig(length=config.segment_length, hop=hop * config.hop_length, pad="none"),
        extra={
            "pretrained": {
                "name": model.key,
                "source": f"{distribution} {version} (PyPI wheel), {model.name}/ checkpoint",
                "licence": "ISC (musicnn, Jordi Pons)",
                "paper": "Pons & Serra, musicnn: pre-trained convolutional neural networks for music audio "
                "tagging, ISMIR 2019 LBD",
                "dataset": model.dataset,
                "published_scores": read_published_scores(folder),
                "parameters_loaded": n_values,
                "trained_epochs_config": {k: trained.get(k) for k in ("epochs", "batch_size", "learning_rate")},
            },
            "front_end": {
                "sample_rate": config.sample_rate, "n_fft": config.n_fft, "hop_length": config.hop_length,
                "n_mels": config.n_mels, "mel": "Slaney scale, area-normalised (librosa defaults)", "power": 2.0,
                "compression": f"log10(1 + {config.log_c:g} x), float32",
                "patch_frames": config.n_frames, "patch_seconds": config.segment_length / config.sample_rate,
                "hop_frames": hop,
            },
            "coverage": coverage.to_dict(),
        },
    )
    return keras_model, info


def _distribution_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- the publisher's graph

#: Tensors of musicnn's training graph: the input patches, the training flag and the outputs.
_GRAPH_INPUT = "model/Placeholder:0"
_GRAPH_TRAINING = "model/Placeholder_2:0"
_GRAPH_OUTPUTS = {
    "vgg": {"taggram": "model/Sigmoid:0", **{f"pool{i + 1}": f"model/max_pooling2d{'' if i == 0 else f'_{i}'}/MaxPool:0"
                                             for i in range(5)}},
    "musicnn": {"taggram": "model/Sigmoid:0", "penultimate": "model/batch_normalization_10/batchnorm/add_1:0",
                "max_pool": "model/Max:0", "mean_pool": "model/moments/Squeeze:0"},
}


def run_original_graph(
    name: str, log_mel: np.ndarray, *, checkpoint_dir: str | None = None, batch_size: int = 16
) -> dict[str, np.ndarray]:
    """Runs musicnn's own graph (its ``.meta`` and checkpoint) on log-mel patches.

    Args:
        name: The model (see :data:`MODELS`).
        log_mel: float32 ``[patches, 187, 96]`` in musicnn's layout (time, mel), already
            compressed with ``log10(1 + 10000 x)``.
        checkpoint_dir: Folder of the ``.meta`` and checkpoint (default: the installed one).
        batch_size: Patches per session call.

    Returns:
        musicnn's outputs in its own layouts: ``taggram [patches, 50]`` and, for vgg,
        ``pool1 .. pool5 [patches, frames, bands, 128]``; for musicnn ``penultimate [patches,
        200]``, ``max_pool`` and ``mean_pool [patches, 753]``.
    """
    import tensorflow as tf

    model = _model(name)
    folder = checkpoint_dir if checkpoint_dir is not None else locate_model_dir(model.name)
    meta = read_meta_graph(model, folder)
    fetches = _GRAPH_OUTPUTS[model.architecture]
    outputs: dict[str, list[np.ndarray]] = {key: [] for key in fetches}
    graph = tf.Graph()
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # the v1 Saver announces "Restoring parameters from ..." at INFO
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
        with tf.compat.v1.Session(graph=graph) as session:
            saver.restore(session, os.path.join(folder, ""))
            for start in range(0, len(log_mel), batch_size):
                batch = np.asarray(log_mel[start:start + batch_size], dtype=np.float32)
                values = session.run(fetches, feed_dict={_GRAPH_INPUT: batch, _GRAPH_TRAINING: False})
                for key, value in values.items():
                    outputs[key].append(np.asarray(value))
    logger.setLevel(level)
    result = {key: np.concatenate(parts, axis=0) for key, parts in outputs.items()}
    for key in ("max_pool", "mean_pool"):
        if key in result:
            result[key] = result[key].reshape(len(log_mel), -1)
    return result


def keras_outputs(keras_model: Any, mel_power: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Outputs of the imported model's named layers for mel power ``[patches, 96, 187, 1]`` (tfaural layout)."""
    import keras

    probe = keras.Model(keras_model.inputs, [keras_model.get_layer(n).output for n in names])
    values = probe(mel_power, training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    return {name: np.asarray(value) for name, value in zip(names, values)}


def verify_import(
    name: str, keras_model: Any, mel_power: np.ndarray, *, checkpoint_dir: str | None = None
) -> dict[str, float]:
    """Largest differences between the imported model and musicnn's own graph on the same patches.

    Args:
        name: The model.
        keras_model: The imported model.
        mel_power: float32 ``[patches, 96, 187]`` mel power (tfaural layout).
        checkpoint_dir: As :func:`run_original_graph`.

    Returns:
        ``{"taggram": max |Δ|, "<embedding>": max |Δ| / peak, ...}``.
    """
    import tensorflow as tf

    from tfaural import spectral

    model = _model(name)
    log_mel = spectral.log10_compress(mel_power).numpy()
    original = run_original_graph(model.name, np.transpose(log_mel, (0, 2, 1)), checkpoint_dir=checkpoint_dir)
    if model.architecture == "vgg":
        layers = {"taggram": "output", **{f"pool{i}": f"pool{i}" for i in range(1, 6)}}
    else:
        layers = {"taggram": "output", "penultimate": "penultimate", "max_pool": "max_pool", "mean_pool": "mean_pool"}
    ours = keras_outputs(keras_model, tf.constant(mel_power[..., np.newaxis]), list(layers.values()))
    errors = {}
    for key, layer in layers.items():
        value = ours[layer]
        if value.ndim == 4:  # [patches, bands, frames, c] -> musicnn's [patches, frames, bands, c]
            value = np.transpose(value, (0, 2, 1, 3))
        reference = original[key]
        delta = float(np.max(np.abs(value - reference)))
        errors[key] = delta if key == "taggram" else delta / max(float(np.max(np.abs(reference))), 1e-12)
    return errors


def song_scores(keras_model: Any, info: RunInfo, waveform: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """Song-level tag scores of an imported tagger for one mono waveform at ``info.audio.sample_rate``.

    The waveform is cut into patches of ``info.segment.length`` samples every ``info.segment.step``
    samples (a trailing partial patch is dropped, as the export's signatures do), each patch's mel
    power goes through the model and the patch scores are averaged.

    Args:
        keras_model: The imported model.
        info: Its run description.
        waveform: float32 ``[samples]`` in [-1, 1], at least one patch long.
        batch_size: Patches per model call.

    Returns:
        float32 ``[n_labels]``.
    """
    import tensorflow as tf

    from tfaural import spectral

    config = info.model
    assert isinstance(config, MusicnnConfig)
    length, hop = info.segment.length, info.segment.step
    if waveform.size < length:
        raise ModelError(f"the waveform has {waveform.size} samples; the model needs at least {length}")
    patches = tf.signal.frame(tf.constant(waveform, tf.float32), length, hop)
    scores = []
    for start in range(0, int(patches.shape[0]), batch_size):
        mel = spectral.melspectrogram(patches[start:start + batch_size], sample_rate=config.sample_rate,
                                      n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels)
        scores.append(np.asarray(keras_model(mel[..., tf.newaxis], training=False)))
    return np.concatenate(scores).mean(axis=0)
