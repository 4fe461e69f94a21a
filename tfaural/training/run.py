"""The training run directory: what training writes and what export, evaluation and the report read.

Layout of ``RUN_DIR``::

    model.keras        the best model (Keras 3 format; carries its architecture config)
    run.json           RunInfo: model config, audio / segment settings, label names, ...
    history.csv        one row per epoch (written by training)
    checkpoints/       the latest training state, for resuming after an interruption
    logs/              TensorBoard event files
    eval.json          evaluation results (written by ``python -m tfaural.training.evaluate``)

:class:`RunInfo` is the single description of a trained model outside its
weights; ``export`` copies it into the SavedModel's ``assets/metadata.json``.

A spectrogram model's STFT settings have one source, its model config
(:func:`tfaural.config.stft_config_of`): :attr:`RunInfo.stft` is derived from it.
``run.json`` carries a copy under ``"stft"`` for readers of the file; reading checks
that the copy agrees with the model config (a ``win_length`` of ``null`` or ``n_fft``,
as earlier versions wrote, is accepted) and rejects the file otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import uuid
import zipfile
from typing import Any

from tfaural import files
from tfaural._version import __version__
from tfaural.config import (
    AudioConfig,
    SegmentConfig,
    STFTConfig,
    model_config_from_dict,
    model_config_to_dict,
    stft_config_of,
)
from tfaural.config import Config as _Config
from tfaural.errors import ConfigError, ModelError

__all__ = ["MODEL_FILE", "INFO_FILE", "TASKS", "RunInfo", "save_run", "write_run_info", "load_run", "read_run_info"]

MODEL_FILE = "model.keras"
INFO_FILE = "run.json"
TASKS = ("single-label", "multi-label")


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Everything about a trained model except its weights.

    Attributes:
        model: The architecture config (ChoiConfig, SampleCNNConfig, AggregationConfig).
        labels: Output label names, in output-unit order.
        task: ``"single-label"`` (softmax, genres) or ``"multi-label"`` (sigmoid, tags).
        audio: Sample rate and mono mix-down the model expects.
        segment: The model's input segment (length in samples, hop between segments
            when a clip is cut for song-level prediction).
        run_id: A unique id of the training run.
        created: ISO-8601 UTC time the run was created.
        tfaural_version: Version of tfaural that trained it.
        extra: Free-form details (dataset, recipe, best epoch, scores).
    """

    model: _Config
    labels: tuple[str, ...]
    task: str
    audio: AudioConfig
    segment: SegmentConfig
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: str = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    )
    tfaural_version: str = __version__
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelError(f"RunInfo.task={self.task!r} is invalid: expected one of {TASKS}")
        n_outputs = getattr(self.model, "n_outputs", None)
        if n_outputs is not None and n_outputs != len(self.labels):
            raise ModelError(
                f"the model has {n_outputs} outputs but {len(self.labels)} label names were given: {list(self.labels)}"
            )

    @property
    def stft(self) -> STFTConfig | None:
        """The STFT of a spectrogram model's input, from :attr:`model` (``None`` for waveform models)."""
        return stft_config_of(self.model)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``"stft"``: a copy of :attr:`stft`, for readers of ``run.json``)."""
        stft = self.stft
        return {
            "run_id": self.run_id,
            "created": self.created,
            "tfaural_version": self.tfaural_version,
            "task": self.task,
            "labels": list(self.labels),
            "model": model_config_to_dict(self.model),
            "audio": self.audio.to_dict(),
            "segment": self.segment.to_dict(),
            "stft": None if stft is None else stft.to_dict(),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        """Inverse of :meth:`to_dict`.

        Raises:
            ModelError: If a required field is missing.
            ConfigError: If a config is invalid, or ``"stft"`` disagrees with the model config's STFT.
        """
        try:
            model = model_config_from_dict(data["model"])
            _check_stft_copy(data.get("stft"), model)
            return cls(
                model=model,
                labels=tuple(data["labels"]),
                task=data["task"],
                audio=AudioConfig.from_dict(data["audio"]),
                segment=SegmentConfig.from_dict(data["segment"]),
                run_id=data["run_id"],
                created=data["created"],
                tfaural_version=data.get("tfaural_version", "unknown"),
                extra=dict(data.get("extra", {})),
            )
        except KeyError as err:
            raise ModelError(f"run description is missing the field {err}") from None


def _check_stft_copy(stft: Any, model: _Config) -> None:
    """Checks the ``"stft"`` entry of ``run.json`` against the model config, its one source.

    Raises:
        ConfigError: If it disagrees (naming both), or is given for a model without an STFT input.
    """
    if stft is None:
        return
    expected = stft_config_of(model)
    if expected is None:
        raise ConfigError(
            f"stft is {stft!r} but the {model.kind!r} model takes a waveform, not an STFT; remove \"stft\" "
            "(a run's STFT settings come from its model config)"
        )
    if STFTConfig.from_dict(stft) != expected:
        raise ConfigError(
            f"stft is {stft!r} but the model config says n_fft={expected.n_fft}, hop_length={expected.hop_length}; "
            "a run's STFT settings come from its model config: fix or remove \"stft\""
        )


def save_run(run_dir: str | os.PathLike[str], model: Any, info: RunInfo) -> None:
    """Writes ``model.keras`` and ``run.json`` into ``run_dir`` (atomically, each file)."""
    root = os.fspath(run_dir)
    os.makedirs(root, exist_ok=True)
    with files.atomic_path(os.path.join(root, MODEL_FILE)) as tmp:
        model.save(tmp)
    write_run_info(root, info)


def write_run_info(run_dir: str | os.PathLike[str], info: RunInfo) -> None:
    """Writes ``run.json`` alone (atomically)."""
    files.write_text(os.path.join(os.fspath(run_dir), INFO_FILE), json.dumps(info.to_dict(), indent=2, sort_keys=True))


def read_run_info(run_dir: str | os.PathLike[str]) -> RunInfo:
    """Reads ``run.json``.

    Raises:
        ModelError: If the directory is not a tfaural run or the file is malformed.
        ConfigError: Naming the file, if a config in it is invalid or its ``"stft"`` disagrees
            with the model config.
    """
    path = os.path.join(os.fspath(run_dir), INFO_FILE)
    if not os.path.isfile(path):
        raise ModelError(f"{os.fspath(run_dir)!r} is not a tfaural run directory: {INFO_FILE} is missing")
    try:
        with open(path, encoding="utf-8") as handle:
            return RunInfo.from_dict(json.load(handle))
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: not valid JSON ({err})") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_run(run_dir: str | os.PathLike[str]) -> tuple[Any, RunInfo]:
    """Loads the best model and its :class:`RunInfo`.

    A musicnn run saved before its temporal filters became ``RowConv2D`` (2026-12-03) loads with them,
    weights unchanged (:func:`tfaural.models.musicnn.with_row_convolutions`). An imported Keras model
    (:class:`~tfaural.config.KerasConfig`) gets its config as ``tfaural_config``, as tfaural's own models
    carry theirs, and its ``Lambda`` layers load if the import was told to trust them.

    Returns:
        ``(keras_model, info)``.

    Raises:
        ModelError: If files are missing or unreadable.
    """
    import keras

    import tfaural.models  # noqa: F401  (registers the custom layers for deserialisation)

    info = read_run_info(run_dir)
    path = os.path.join(os.fspath(run_dir), MODEL_FILE)
    if not os.path.isfile(path):
        raise ModelError(f"{os.fspath(run_dir)!r}: {MODEL_FILE} is missing (did training finish an epoch?)")
    from tfaural.config import KerasConfig

    if isinstance(info.model, KerasConfig):  # an imported Keras model: its run.json says what it takes
        from tfaural.models.keras_files import load_model_file

        model = load_model_file(path, trust_lambda=info.model.trust_lambda, flag="run")
        model.tfaural_config = info.model
        return model, info
    try:
        if _saved_with_conv2d_temporal_filters(path, info):
            model = _load_with_row_convolutions(path, info)
        else:
            model = keras.models.load_model(path, compile=False)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ModelError(f"{path}: cannot load the model ({err})") from None
    return model, info


def _saved_with_conv2d_temporal_filters(path: str, info: RunInfo) -> bool:
    """Whether ``path`` is a musicnn-architecture model saved before 2026-12-03 (``Conv2D`` temporal filters).

    ``.keras`` files name each layer's weights by its class (``layers/conv2d_2``, ``layers/row_conv2d``),
    so today's builder cannot read such a file as it is.
    """
    from tfaural.config import MusicnnConfig

    if not isinstance(info.model, MusicnnConfig) or info.model.architecture != "musicnn":
        return False
    import h5py

    try:
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as stream, h5py.File(
                stream, "r") as weights:
            return "layers" in weights and "row_conv2d" not in weights["layers"]
    except (OSError, KeyError, zipfile.BadZipFile):
        return False  # let keras.models.load_model say what is wrong


def _load_with_row_convolutions(path: str, info: RunInfo) -> Any:
    """Reads a file of :func:`_saved_with_conv2d_temporal_filters` into the builder's former layout, then
    rebuilds it with ``RowConv2D`` (:func:`tfaural.models.musicnn.with_row_convolutions`; same weights)."""
    from tfaural.config import MusicnnConfig
    from tfaural.models.musicnn import build_musicnn, with_row_convolutions

    assert isinstance(info.model, MusicnnConfig)  # checked by _saved_with_conv2d_temporal_filters
    with zipfile.ZipFile(path) as archive:
        name = json.loads(archive.read("config.json"))["config"].get("name")
    model = build_musicnn(info.model, name=name, row_convolutions=False)
    model.load_weights(path)
    return with_row_convolutions(model)
