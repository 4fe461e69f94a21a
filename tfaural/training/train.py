"""Training with the papers' recipes: ``python -m tfaural.training.train``.

Recipes (defaults, each overridable on the command line):

* **SampleCNN family** (Lee et al. 2018, §5.2): sigmoid outputs with binary
  cross-entropy (softmax + categorical cross-entropy when the dataset is
  single-label), SGD with Nesterov momentum 0.9, learning rate 0.01 divided by 5
  whenever the validation loss has not improved for 3 epochs, four times (the last
  rate is 1.6e-5), then stop; the best weights are reloaded at every decay. Batch
  size 23 (``--preset mtat``) or 50 (``--preset msd``).
* **Choi CNN** (Choi et al. 2015): softmax with categorical cross-entropy for
  single-label genres (sigmoid + binary cross-entropy for tags), dropout 0.5, the
  same optimiser and schedule; 4-s STFT inputs.

``--data`` is a TFRecord dataset folder written by ``python -m beam_jobs.make_tfrecords``
or the name of a prepared TensorFlow Datasets dataset (``tfaural_catalogue/demo``,
``tfaural_gtzan/22050hz``, ``speech_commands``), converted once into a cached dataset
folder by :func:`tfaural.data.tfds_source.prepare_tfds` (``--tfds-data-dir``,
``--tfds-cache``, ``--tfds-split``, ``--tfds-label``); ``run.json`` records the TFDS name
and version so ``python -m tfaural.training.evaluate --run RUN_DIR`` finds the data again.

:func:`train` is one ``model.fit`` over the epochs; the schedule, the run directory's
records and resuming are Keras callbacks (:mod:`tfaural.training.callbacks`). A run
directory (see :mod:`tfaural.training.run`) holds the best model (``model.keras``),
``run.json``, ``history.csv``, TensorBoard logs (``logs/``) and a resumable
checkpoint (``checkpoints/``, written every epoch and every ``--checkpoint-every``
steps): rerunning the same command after an interruption continues at the step where
it stopped, with the schedule's state.

GPU options (constructed on CPU too, used when a GPU is present): mixed precision
(``--mixed-precision``), ``tf.distribute.MirroredStrategy`` over the visible GPUs
(``--distribute``), XLA (``--jit``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfaural.cli import HelpFormatter, add_verbose_flag, check_output_folder
from tfaural.config import (
    AudioConfig,
    ChoiConfig,
    Config,
    MusicnnConfig,
    SampleCNNConfig,
    SegmentConfig,
    describe_differences,
    stft_config_of,
)
from tfaural.errors import ConfigError, DataError, ModelError, ParameterError, TfauralError
from tfaural.training.run import MODEL_FILE, RunInfo, load_run, read_run_info

if TYPE_CHECKING:
    from tfaural.data.tfds_source import TfdsOptions
    from tfaural.training.callbacks import ResumableCheckpoint

__all__ = ["TrainConfig", "TrainResult", "BATCH_PRESETS", "train", "add_tfds_arguments", "tfds_options", "main"]

logger = logging.getLogger(__name__)

BATCH_PRESETS = {"mtat": 23, "msd": 50}
MODEL_CHOICES = ("choi", "samplecnn", "samplecnn-<sample rate>", "mel-frame", "raw-frame", "musicnn")
MIN_DELTA = 1e-4  # smallest validation-loss decrease that counts as an improvement (as Keras' ReduceLROnPlateau)
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"  # of tfaural.training.callbacks.ResumableCheckpoint
HISTORY_FILE = "history.csv"


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Everything about a training run except the data and the output folder.

    Attributes:
        model: ``"choi"``, ``"samplecnn"`` (3^9 at 22,050 Hz), ``"samplecnn-<rate>"`` (a
            Table 3 preset), ``"mel-frame"`` or ``"raw-frame"`` (Table 2 baselines).
        epochs: Most epochs (the schedule usually stops earlier).
        batch_size: Segments per batch (``None``: the preset's).
        preset: Batch-size preset, ``"mtat"`` (23) or ``"msd"`` (50).
        learning_rate: Initial SGD learning rate.
        momentum: Nesterov momentum.
        decay_factor: Learning-rate factor at each decay (1/5).
        patience: Epochs without validation-loss improvement before a decay.
        max_decays: Decays before training stops at the next plateau.
        steps_per_epoch: Training steps per epoch (``None``: about one pass over the
            training segments).
        input_scaling: Choi input scaling, ``"log"`` (log(1 + 10|X|)) or ``"linear"``.
        window: Window (filter) size of the frame-level baselines in samples.
        hop: Hop (stride) of the frame-level baselines in samples.
        fc_units: Widths of the Choi CNN's fully connected layers.
        dropout: Dropout rate (0.5 in both papers; small catalogues train faster with less).
        optimizer: ``"sgd"`` (the papers' Nesterov SGD) or ``"adam"``.
        seed: Seed of the weights, crops and shuffles. Two runs of one seed start alike, but are not
            bit-identical unless ``deterministic``: the input pipeline's parallel reads and TensorFlow's
            multi-threaded kernels order their work as threads finish.
        deterministic: Make a run bit-reproducible from its seed: the input pipeline keeps its order and
            TensorFlow runs deterministic kernels (``tf.config.experimental.enable_op_determinism``, for the
            whole process; slower, and some GPU kernels have no deterministic version). A resumed run draws
            a data stream of its own (:func:`stream_seed`), reproducible too, but not that of a run never
            interrupted.
        shuffle_buffer: Shuffle buffer in segments.
        checkpoint_every: Steps between mid-epoch checkpoints (0: only at epoch ends).
        mixed_precision: Use the ``mixed_float16`` policy.
        jit: Compile the train step with XLA.
        distribute: ``"auto"`` (MirroredStrategy when more than one GPU), ``"mirrored"`` or ``"none"``.
    """

    kind: ClassVar[str] = "train"
    model: str = "choi"
    epochs: int = 100
    batch_size: int | None = None
    preset: str = "mtat"
    learning_rate: float = 0.01
    momentum: float = 0.9
    decay_factor: float = 0.2
    patience: int = 3
    max_decays: int = 4
    steps_per_epoch: int | None = None
    input_scaling: str = "log"
    window: int = 729
    hop: int = 243
    fc_units: tuple[int, ...] = (256, 256)
    dropout: float = 0.5
    optimizer: str = "sgd"
    seed: int = 0
    shuffle_buffer: int = 1024
    checkpoint_every: int = 100
    mixed_precision: bool = False
    jit: bool = False
    distribute: str = "auto"
    deterministic: bool = False

    def validate(self) -> None:
        model_ok = self.model in ("choi", "samplecnn", "mel-frame", "raw-frame", "musicnn") or (
            self.model.startswith("samplecnn-") and self.model[10:].isdigit()
        )
        if not model_ok:
            raise ConfigError(f"TrainConfig.model={self.model!r} is invalid: expected one of {MODEL_CHOICES}")
        if self.preset not in BATCH_PRESETS:
            raise ConfigError(f"TrainConfig.preset={self.preset!r} is invalid: expected one of {sorted(BATCH_PRESETS)}")
        for name in ("epochs", "patience", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid: expected >= 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"TrainConfig.batch_size={self.batch_size!r} is invalid: expected >= 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"TrainConfig.steps_per_epoch={self.steps_per_epoch!r} is invalid: expected >= 1")
        if not 0 < self.decay_factor < 1:
            raise ConfigError(f"TrainConfig.decay_factor={self.decay_factor!r} is invalid: expected in (0, 1)")
        if self.learning_rate <= 0:
            raise ConfigError(f"TrainConfig.learning_rate={self.learning_rate!r} is invalid: expected > 0")
        if self.distribute not in ("auto", "mirrored", "none"):
            raise ConfigError(f"TrainConfig.distribute={self.distribute!r}: expected 'auto', 'mirrored' or 'none'")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"TrainConfig.dropout={self.dropout!r} is invalid: expected in [0, 1)")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"TrainConfig.optimizer={self.optimizer!r} is invalid: expected 'sgd' or 'adam'")
        if self.input_scaling not in ("log", "linear"):
            raise ConfigError(f"TrainConfig.input_scaling={self.input_scaling!r}: expected 'log' or 'linear'")

    @property
    def effective_batch_size(self) -> int:
        """The batch size used: ``batch_size`` or the preset's."""
        return self.batch_size or BATCH_PRESETS[self.preset]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did.

    Attributes:
        run_dir: The run directory.
        epochs: Epochs completed (in total, across resumptions).
        best_epoch: Epoch (0-based) of the best validation loss.
        best_val_loss: The best validation loss.
        final_learning_rate: Learning rate at the end.
        seconds: Wall-clock seconds of this invocation.
        resumed_from: ``(epoch, step)`` this invocation resumed from, or ``None``.
        stopped: Why training ended (``"schedule"``, ``"epochs"``, ``"finished"``).
    """

    run_dir: str
    epochs: int
    best_epoch: int
    best_val_loss: float
    final_learning_rate: float
    seconds: float
    resumed_from: tuple[int, int] | None
    stopped: str


# ----------------------------------------------------------------------------- model and data


def model_config_for(
    config: TrainConfig, *, n_outputs: int, multi_label: bool, sample_rate: int, init_from: str | None = None
) -> Config:
    """The architecture config for a training config and a dataset.

    ``model="musicnn"`` fine-tunes an imported pretrained tagger (``python -m
    tfaural.pretrained``): the architecture is the ``init_from`` run's, with an output
    layer for this dataset's labels.

    Raises:
        DataError: If the dataset's sample rate does not fit the model.
        ModelError: If ``model="musicnn"`` is not given a pretrained musicnn run to start from.
    """
    activation = "sigmoid" if multi_label else "softmax"
    if config.model == "musicnn":
        source = read_run_info(init_from).model if init_from and "," not in init_from else None
        if not isinstance(source, MusicnnConfig):
            raise ModelError(
                "--model musicnn fine-tunes an imported musicnn tagger: pass --init-from RUN_DIR of a run written by "
                "python -m tfaural.pretrained (e.g. musicnn/MTT_vgg)"
            )
        if sample_rate != source.sample_rate:
            raise DataError(
                f"the pretrained tagger expects {source.sample_rate} Hz audio but the dataset is at {sample_rate} Hz; "
                f"rebuild the TFRecords with --sample-rate {source.sample_rate}"
            )
        return source.replace(n_outputs=n_outputs, output_activation=activation)
    if config.model == "choi":
        return ChoiConfig(
            n_outputs=n_outputs,
            output_activation=activation,
            input_scaling=config.input_scaling,
            fc_units=config.fc_units,
            dropout=config.dropout,
            sample_rate=sample_rate,
        )
    from tfaural.models.samplecnn import SAMPLECNN_PRESETS

    if config.model in ("samplecnn", "mel-frame", "raw-frame") or config.model.startswith("samplecnn-"):
        rate = int(config.model[10:]) if config.model.startswith("samplecnn-") else 22050
        if config.model.startswith("samplecnn"):
            if rate not in SAMPLECNN_PRESETS:
                raise ModelError(f"no SampleCNN preset for {rate} Hz; Table 3 has {sorted(SAMPLECNN_PRESETS)}")
            if sample_rate != rate:
                other = (f"or pick samplecnn-{sample_rate}" if sample_rate in SAMPLECNN_PRESETS else
                         f"(Table 3 has no preset for {sample_rate} Hz: {sorted(SAMPLECNN_PRESETS)})")
                raise DataError(f"model {config.model!r} expects {rate} Hz audio but the dataset is at {sample_rate} "
                                f"Hz; rebuild the TFRecords with --sample-rate {rate} {other}")
            return SampleCNNConfig(
                family="samplecnn",
                filter_sizes=tuple(SAMPLECNN_PRESETS[rate]),
                n_outputs=n_outputs,
                output_activation=activation,
                dropout=config.dropout,
                sample_rate=rate,
            )
        return SampleCNNConfig(
            family=config.model,
            window=config.window,
            hop=config.hop,
            filter_sizes=_frame_filter_sizes(config.hop),
            n_outputs=n_outputs,
            output_activation=activation,
            dropout=config.dropout,
            sample_rate=sample_rate,
        )
    raise ConfigError(f"unknown model {config.model!r}")


def _frame_filter_sizes(hop: int) -> tuple[int, ...]:
    """Module sizes of a frame-level model: 3-size modules up to 59,049 samples (Table 2)."""
    n = round(math.log(59049 / hop, 3))
    if hop * 3**n != 59049:
        raise ConfigError(f"hop={hop} does not divide 59,049 = 3^10 into a power of 3; use 729, 243, 81, 27, 9 or 3")
    return (3,) * n


def segment_length_for(model_config: Config) -> int:
    """Samples per model input."""
    if isinstance(model_config, MusicnnConfig):
        return model_config.segment_length
    if isinstance(model_config, ChoiConfig):
        length = 4 * model_config.sample_rate
        stft = model_config.stft
        if stft.n_frames(length) != model_config.n_frames:
            length = (model_config.n_frames - 1) * model_config.hop_length
        return length
    assert isinstance(model_config, SampleCNNConfig)
    return int(model_config.input_length)


def _strategy(config: TrainConfig) -> Any:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if config.distribute == "mirrored" or (config.distribute == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _compile(model: Any, config: TrainConfig, *, multi_label: bool, learning_rate: float) -> None:
    import keras

    if config.optimizer == "adam":
        optimizer: Any = keras.optimizers.Adam(learning_rate=learning_rate)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=config.momentum, nesterov=True)
    if multi_label:
        loss = keras.losses.BinaryCrossentropy()
        metrics: list[Any] = [keras.metrics.AUC(multi_label=True, name="auc")]
    else:
        loss = keras.losses.CategoricalCrossentropy()
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=config.jit)


def _copy_matching_weights(source: Any, target: Any) -> list[str]:
    """Copies weights of layers with the same name and shapes; returns the copied names."""
    copied = []
    names = {layer.name for layer in source.layers}
    for layer in target.layers:
        if layer.name not in names or not layer.weights:
            continue
        weights = source.get_layer(layer.name).get_weights()
        if [w.shape for w in weights] == [tuple(v.shape) for v in layer.weights]:
            layer.set_weights(weights)
            copied.append(layer.name)
    return copied


# ----------------------------------------------------------------------------- training


def stream_seed(seed: int, resumed_at: int) -> int:
    """The seed of the training data's stream in a run resumed after ``resumed_at`` steps (``seed`` at the start).

    A fresh process's stream starts where the run's first one did: seeded alike, a resumed run would
    draw the same first batches again (each time it is resumed: a preemptible job would train on the
    start of the shuffled stream over and over). Replaying the ``resumed_at`` batches to continue the
    stream exactly would read and crop them all again, so a resumed run draws a stream of its own,
    seeded by both numbers (it is then not bit-identical to a run never interrupted).
    """
    if not resumed_at:
        return seed
    digest = hashlib.sha256(f"{seed}/{resumed_at}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _datasets(data: str, config: TrainConfig, model_config: Config, info: Any, *,
              resumed_at: int = 0) -> tuple[Any, Any, int, int]:
    from tfaural.data.pipeline import make_dataset, model_family
    from tfaural.data.tfrecord import shard_pattern

    family = model_family(model_config)
    length = segment_length_for(model_config)
    stft = stft_config_of(model_config)
    batch = config.effective_batch_size
    train_pattern = shard_pattern(data, "train")
    valid_pattern = shard_pattern(data, "validation")
    if info.count("train") == 0:
        raise DataError(f"{data}: the dataset has no 'train' split (dataset.json lists {sorted(info.splits)})")
    if info.count("validation") == 0:
        raise DataError(f"{data}: the dataset has no 'validation' split, which the learning-rate schedule needs")
    train_ds = make_dataset(
        train_pattern, family=family, segment_length=length, batch_size=batch, training=True,
        seed=stream_seed(config.seed, resumed_at),
        deterministic=config.deterministic, shuffle_buffer=config.shuffle_buffer, stft=stft,
        sample_rate=info.sample_rate, info=info,
    ).repeat()
    valid_ds = make_dataset(
        valid_pattern, family=family, segment_length=length, batch_size=batch, training=False,
        segments_per_track=None, stft=stft, sample_rate=info.sample_rate, info=info,
    )
    samples = info.count("train", "samples")
    segments = max(info.count("train", "records"), samples // length)
    steps = config.steps_per_epoch or max(1, math.ceil(segments / batch))
    valid_segments = max(1, info.count("validation", "samples") // length)
    return train_ds, valid_ds, steps, valid_segments


@contextlib.contextmanager
def _policy(mixed_precision: bool) -> Iterator[None]:
    import keras

    previous = keras.mixed_precision.global_policy().name
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def train(
    data: str,
    run_dir: str,
    config: TrainConfig,
    *,
    init_from: str | None = None,
    restart: bool = False,
    verbose: int | None = None,
    crash_after_steps: int | None = None,
    tfds: TfdsOptions | None = None,
) -> TrainResult:
    """Trains a model on a TFRecord dataset folder (``dataset.json`` + ``train``/``validation`` shards).

    Args:
        data: Dataset folder written by ``beam_jobs.make_tfrecords``, or the name of a prepared
            TFDS dataset (``"tfaural_catalogue/demo"``), converted by
            :func:`tfaural.data.tfds_source.prepare_tfds` and recorded in ``run.json``
            (``extra["tfds"]``).
        run_dir: Output run directory (resumed if it holds a checkpoint of the same config).
        config: The recipe.
        init_from: A run directory whose weights initialise matching layers (transfer).
        restart: Ignore an existing checkpoint and start over.
        verbose: Keras verbosity (``None``: progress bar on a terminal, a line per epoch otherwise).
        crash_after_steps: Testing aid: end the process abruptly (``os._exit``) after this
            many training steps, as a kill would.
        tfds: Where TFDS names are found and converted (``None``: the defaults).

    Returns:
        A :class:`TrainResult`.

    Raises:
        TfauralError: For data, configuration or model problems.
    """
    import keras

    from tfaural.data.tfds_source import resolve_data, run_extra
    from tfaural.data.tfrecord import read_dataset_info
    from tfaural.models import build
    from tfaural.training.callbacks import BestRun, HistoryCSV, PlateauSchedule, ResumableCheckpoint

    start_time = time.time()
    check_output_folder(run_dir)
    data = resolve_data(data, tfds, require_splits=("train", "validation"), progress=verbose != 0)
    info = read_dataset_info(data)
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "train_config.json")
    resuming = os.path.isfile(os.path.join(run_dir, CHECKPOINT_DIR, STATE_FILE)) and not restart
    if resuming:
        with open(config_path, encoding="utf-8") as handle:
            previous = TrainConfig.from_json(handle.read())
        if previous.replace(epochs=config.epochs) != config.replace(epochs=previous.epochs):
            changed = describe_differences(previous.to_dict(), config.to_dict(), ignore=("epochs",))
            raise ConfigError(f"{run_dir} holds a checkpoint of another training config ({changed}); rerun it as it "
                              "was to resume, pass --restart to start over, or use another --output")
    elif restart:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(run_dir, HISTORY_FILE))
    with open(config_path, "w", encoding="utf-8") as handle:
        handle.write(config.to_json(indent=2))

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()  # process-wide, as TensorFlow has no way back
    with _policy(config.mixed_precision):
        model_config = model_config_for(
            config, n_outputs=info.num_labels, multi_label=info.multi_label, sample_rate=info.sample_rate,
            init_from=init_from,
        )
        strategy = _strategy(config)
        with strategy.scope():
            model = build(model_config)
            _compile(model, config, multi_label=info.multi_label, learning_rate=config.learning_rate)
        resumed_at = _resumed_at(run_dir) if resuming else 0
        train_ds, valid_ds, steps, _ = _datasets(data, config, model_config, info, resumed_at=resumed_at)
        if getattr(model_config, "family", None) == "mel-frame":
            from tfaural.models.samplecnn import adapt_standardise

            sample = [x for x, _ in train_ds.take(max(1, min(20, steps)))]
            adapt_standardise(model, np.concatenate([s.numpy()[..., 0] for s in sample]))
        run_info = RunInfo(
            model=model_config,
            labels=tuple(info.label_names),
            task="multi-label" if info.multi_label else "single-label",
            audio=AudioConfig(sample_rate=info.sample_rate),
            segment=SegmentConfig(length=segment_length_for(model_config)),
            extra={"dataset": os.path.abspath(data), "train_config": config.to_dict(), **run_extra(data)},
        )
        schedule = PlateauSchedule(
            learning_rate=config.learning_rate, factor=config.decay_factor, patience=config.patience,
            max_decays=config.max_decays, min_delta=MIN_DELTA,
        )
        checkpoint = ResumableCheckpoint(
            os.path.join(run_dir, CHECKPOINT_DIR), schedule, epochs=config.epochs, steps_per_epoch=steps,
            every=config.checkpoint_every, run_id=run_info.run_id, exit_after_steps=crash_after_steps,
        )
        resumed_from = None
        if resuming:
            best = _best_weights(run_dir)
            state = checkpoint.restore(model, best_weights=best)
            resumed_from = (state.epoch, state.step)
            run_info = dataclasses.replace(run_info, run_id=checkpoint.run_id)
            logger.info("resuming %s from epoch %d, step %d", run_dir, state.epoch + 1, state.step)
        elif init_from:
            source, _ = load_run(init_from)
            copied = _copy_matching_weights(source, model)
            if not copied:
                raise ModelError(f"--init-from {init_from}: no layer of that model matches this one")
            logger.info("initialised %d layers from %s: %s", len(copied), init_from, ", ".join(copied))
        if checkpoint.finished:
            logger.info("%s already finished (%s); nothing to do", run_dir, checkpoint.finished)
            return _result(run_dir, checkpoint, start_time, resumed_from, "finished")
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        callbacks = [
            schedule,
            HistoryCSV(os.path.join(run_dir, HISTORY_FILE)),
            BestRun(run_dir, run_info),
            keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "logs"), write_graph=False),
            checkpoint,
        ]
        with warnings.catch_warnings():  # Keras warns when a finite validation set ends, as it must
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            model.fit(
                train_ds,
                validation_data=valid_ds,
                epochs=config.epochs,
                initial_epoch=checkpoint.epoch,
                steps_per_epoch=steps,
                verbose=verbose,
                callbacks=callbacks,
                shuffle=False,  # tf.data shuffles; Keras would only warn
            )
    return _result(run_dir, checkpoint, start_time, resumed_from, checkpoint.finished or "epochs")


def _resumed_at(run_dir: str) -> int:
    """Training steps the run's checkpoint has made (its ``global_step``)."""
    with open(os.path.join(run_dir, CHECKPOINT_DIR, STATE_FILE), encoding="utf-8") as handle:
        return int(json.load(handle).get("global_step", 0))


def _best_weights(run_dir: str) -> list[Any] | None:
    """The weights of the run's best model so far (``None`` before the first improvement)."""
    import keras

    path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.isfile(path):
        return None
    return list(keras.models.load_model(path, compile=False).get_weights())


def _result(
    run_dir: str, checkpoint: ResumableCheckpoint, start: float, resumed: tuple[int, int] | None, stopped: str
) -> TrainResult:
    schedule = checkpoint.schedule
    return TrainResult(
        run_dir=run_dir,
        epochs=checkpoint.epoch,
        best_epoch=schedule.best_epoch,
        best_val_loss=schedule.best,
        final_learning_rate=schedule.learning_rate,
        seconds=time.time() - start,
        resumed_from=resumed,
        stopped=stopped,
    )

# ----------------------------------------------------------------------------- CLI


def _split_mapping(text: str) -> tuple[str, str]:
    name, sep, spec = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TFAURAL_SPLIT=TFDS_SPLIT, e.g. validation=train[90%:]")
    return name, spec


def add_tfds_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``--tfds-*`` options that say where a TFDS ``--data`` name is found and converted."""
    group = parser.add_argument_group(
        "TFDS datasets (--data NAME)",
        "--data may name a prepared TensorFlow Datasets dataset instead of a folder: NAME[/CONFIG][:VERSION], e.g. "
        "tfaural_catalogue/demo or speech_commands. Nothing is downloaded: prepare it first (python -m "
        "tfaural.data.build_tfds for tfaural's builders, `tfds build` for others). Its train/validation(valid, "
        "val)/test splits are converted once into TFRecords in the cache and reused while the prepared files "
        "are unchanged.",
    )
    group.add_argument("--tfds-data-dir", default=None, metavar="DIR",
                       help="TFDS data directory where NAME is prepared (default: $TFDS_DATA_DIR or "
                       "~/tensorflow_datasets)")
    group.add_argument("--tfds-cache", default=None, metavar="DIR",
                       help="where converted datasets are kept (default: ~/.cache/tfaural/tfds, or "
                       "$XDG_CACHE_HOME/tfaural/tfds)")
    group.add_argument("--tfds-split", action="append", type=_split_mapping, default=[], metavar="SPLIT=SPEC",
                       help="take a tfaural split from a TFDS split or slice, e.g. --tfds-split train=train[:90%%] "
                       "--tfds-split validation=train[90%%:] for a dataset without a validation split (repeatable)")
    group.add_argument("--tfds-label", default=None, metavar="FEATURE",
                       help="the label feature: a ClassLabel, Sequence(ClassLabel) or FeaturesDict of booleans "
                       "(default: the supervised label, else 'label', 'labels' or 'tags')")


def tfds_options(args: argparse.Namespace) -> TfdsOptions:
    """The :class:`~tfaural.data.tfds_source.TfdsOptions` of parsed ``--tfds-*`` options."""
    from tfaural.data.tfds_source import TfdsOptions

    return TfdsOptions(data_dir=args.tfds_data_dir, cache_dir=args.tfds_cache, splits=dict(args.tfds_split),
                       label=args.tfds_label)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tfaural.training.train",
        description="Train a music CNN with the papers' recipes on TFRecords written by "
        "`python -m beam_jobs.make_tfrecords` or on a prepared TFDS dataset. Rerun the same command to resume an "
        "interrupted run.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", required=True, help=f"architecture: {', '.join(MODEL_CHOICES)}")
    parser.add_argument("--data", required=True, metavar="DATASET_DIR_OR_TFDS_NAME",
                        help="dataset folder (dataset.json + train/validation/test shards) or a prepared TFDS "
                        "dataset name such as tfaural_catalogue/demo (see the TFDS options below)")
    parser.add_argument("--output", required=True, help="run directory to write (resumed if it exists)")
    parser.add_argument("--epochs", type=int, default=100, help="most epochs; the schedule usually stops earlier")
    parser.add_argument("--batch-size", type=int, default=None, help="segments per batch (default: the preset's)")
    parser.add_argument("--preset", choices=sorted(BATCH_PRESETS), default="mtat", help="batch-size preset (23/50)")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="initial SGD learning rate")
    parser.add_argument("--patience", type=int, default=3, help="epochs without improvement before a decay")
    parser.add_argument("--max-decays", type=int, default=4, help="learning-rate decays (x1/5) before stopping")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="training steps per epoch")
    parser.add_argument("--input-scaling", choices=("log", "linear"), default="log", help="Choi CNN input scaling")
    parser.add_argument("--window", type=int, default=729, help="frame-level baselines: window in samples")
    parser.add_argument("--hop", type=int, default=243, help="frame-level baselines: hop in samples")
    parser.add_argument("--dropout", type=float, default=0.5, help="dropout rate (the papers' 0.5)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimiser (sgd: the papers')")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights, crops and shuffles (two runs start alike, but differ "
                             "slightly as threads finish in another order, unless --deterministic)")
    parser.add_argument("--deterministic", action="store_true",
                        help="bit-reproducible from --seed: ordered input pipeline and deterministic kernels "
                             "(slower; a resumed run is reproducible too, but draws other batches than a run "
                             "never interrupted)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between mid-epoch checkpoints")
    parser.add_argument("--init-from", default=None,
                        help="pretrained run directory (comma-separated list for --transfer features)")
    parser.add_argument("--transfer", choices=("weights", "features"), default="weights",
                        help="with --init-from: 'weights' initialises matching layers and fine-tunes; 'features' "
                        "trains a two-layer classifier on frozen multi-level multi-scale features (Lee et al. 4.2)")
    parser.add_argument("--hidden-units", default="4096,4096", help="--transfer features: classifier widths")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (for GPUs)")
    parser.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--distribute", choices=("auto", "mirrored", "none"), default="auto",
                        help="MirroredStrategy over GPUs ('auto': when more than one GPU is visible)")
    parser.add_argument("--crash-after-steps", type=int, default=None, help=argparse.SUPPRESS)
    add_tfds_arguments(parser)
    add_verbose_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point. Returns the process exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        config = TrainConfig(
            model=args.model,
            epochs=args.epochs,
            batch_size=args.batch_size,
            preset=args.preset,
            learning_rate=args.learning_rate,
            patience=args.patience,
            max_decays=args.max_decays,
            steps_per_epoch=args.steps_per_epoch,
            input_scaling=args.input_scaling,
            window=args.window,
            hop=args.hop,
            dropout=args.dropout,
            optimizer=args.optimizer,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            mixed_precision=args.mixed_precision,
            jit=args.jit,
            distribute=args.distribute,
            deterministic=args.deterministic,
        )
        check_output_folder(args.output)  # before anything is loaded or converted
        if args.transfer == "features":
            from tfaural.data.tfds_source import resolve_data
            from tfaural.training.transfer import train_transfer

            sources = [p for p in (args.init_from or "").split(",") if p]
            data = resolve_data(args.data, tfds_options(args), require_splits=("train", "validation"))
            transfer = train_transfer(
                data, args.output, sources, hidden_units=tuple(int(u) for u in args.hidden_units.split(",")),
                dropout=args.dropout, epochs=args.epochs, batch_size=args.batch_size or 32,
                learning_rate=args.learning_rate, optimizer=args.optimizer, seed=args.seed,
            )
            print(f"trained the transfer classifier on {transfer.n_features} frozen features for {transfer.epochs} "
                  f"epochs in {transfer.seconds:.0f} s; best validation loss {transfer.best_val_loss:.4f}; "
                  f"model in {transfer.run_dir}/model.keras")
            return 0
        result = train(args.data, args.output, config, init_from=args.init_from, restart=args.restart,
                       crash_after_steps=args.crash_after_steps, tfds=tfds_options(args))
    except (TfauralError, ParameterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun the same command to resume {args.output} from its last checkpoint (every "
              f"--checkpoint-every {args.checkpoint_every} steps), or add --restart to start over", file=sys.stderr)
        return 130
    print(
        f"trained {result.epochs} epochs in {result.seconds:.0f} s; best validation loss "
        f"{result.best_val_loss:.4f} at epoch {result.best_epoch + 1}; model in {result.run_dir}/model.keras"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
