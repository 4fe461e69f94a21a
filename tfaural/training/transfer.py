"""Feature-based transfer learning (Lee et al. 2018, §4.2 and §5.5–5.6).

Pretrained SampleCNNs (one or several, any of the m^n family at one sample rate)
become frozen feature extractors: each is slid over every whole track, its last
three hidden layers are max- and mean-pooled over time, and the concatenation
(:func:`tfaural.models.aggregation.multi_scale_features`) feeds a classifier of
two fully connected layers that is trained on the target dataset. The result is
saved as a normal run whose model is the end-to-end aggregation model
(``waveform [batch, samples] -> output``), so it evaluates and exports like any other.

``python -m tfaural.training.train --transfer features --init-from RUN_A[,RUN_B,...] --data ... --output ...``
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfaural.config import AudioConfig, SampleCNNConfig, SegmentConfig
from tfaural.errors import DataError, ModelError
from tfaural.training.run import RunInfo, load_run, save_run

__all__ = ["TransferResult", "clip_features", "train_transfer"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TransferResult:
    """What :func:`train_transfer` did.

    Attributes:
        run_dir: The written run directory.
        n_features: Length of the aggregated feature vector.
        epochs: Classifier epochs trained.
        best_val_loss: Best validation loss of the classifier.
        seconds: Wall-clock seconds.
    """

    run_dir: str
    n_features: int
    epochs: int
    best_val_loss: float
    seconds: float


def clip_features(
    features_model: Any, data: str, split: str, *, segment_length: int, info: Any
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Aggregated features of every track of one split.

    Args:
        features_model: ``multi_scale_features`` model (waveform ``[1, samples]`` -> ``[1, D]``).
        data: Dataset folder.
        split: Split name.
        segment_length: Longest extractor input in samples (tracks are read as whole
            multiples of it; shorter tracks are zero-padded to one).
        info: The dataset's ``DatasetInfo``.

    Returns:
        ``(track_ids, features [n, D], labels [n, n_labels])``.
    """
    import tensorflow as tf

    from tfaural.data.pipeline import make_track_dataset
    from tfaural.data.tfrecord import shard_pattern

    tracks = make_track_dataset(
        shard_pattern(data, split), family="samplecnn", segment_length=segment_length, segments_per_track=None,
        sample_rate=info.sample_rate, info=info,
    )
    run = tf.function(lambda y: features_model(y, training=False), reduce_retracing=True)
    ids, feats, labels = [], [], []
    for track_id, segments, label in tracks:
        waveform = tf.reshape(segments, [1, -1])
        feats.append(run(waveform).numpy()[0])
        ids.append(track_id.numpy().decode())
        labels.append(label.numpy())
    if not ids:
        raise DataError(f"{data}: split {split!r} has no tracks")
    return ids, np.stack(feats), np.stack(labels)


def train_transfer(
    data: str,
    run_dir: str,
    sources: Sequence[str],
    *,
    hidden_units: tuple[int, ...] = (4096, 4096),
    dropout: float = 0.5,
    epochs: int = 100,
    batch_size: int = 32,
    learning_rate: float = 0.01,
    optimizer: str = "sgd",
    seed: int = 0,
) -> TransferResult:
    """Trains the two-layer classifier on frozen multi-level multi-scale features.

    Args:
        data: Target dataset folder (``train`` and ``validation`` splits).
        run_dir: Output run directory.
        sources: Run directories of pretrained SampleCNN-family models (same sample rate
            as the target dataset).
        hidden_units: Widths of the two fully connected layers (4096 in the paper).
        dropout: Dropout after each fully connected layer.
        epochs: Most classifier epochs (early stopping on validation loss).
        batch_size: Tracks per batch.
        learning_rate: Initial learning rate (divided by 5 on plateaus, as the SampleCNN recipe).
        optimizer: ``"sgd"`` (Nesterov momentum 0.9) or ``"adam"``.
        seed: Random seed.

    Returns:
        A :class:`TransferResult`.
    """
    import keras

    from tfaural.data.tfds_source import run_extra
    from tfaural.data.tfrecord import read_dataset_info
    from tfaural.models import config_from_model
    from tfaural.models.aggregation import aggregation_model, multi_scale_features, transfer_classifier

    start = time.time()
    if not sources:
        raise ModelError("feature-based transfer needs at least one pretrained run (--init-from RUN_DIR)")
    keras.utils.set_random_seed(seed)
    info = read_dataset_info(data)
    models = []
    for source in sources:
        model, _ = load_run(source)
        config = config_from_model(model)
        if not isinstance(config, SampleCNNConfig):
            raise ModelError(f"--init-from {source}: feature transfer needs a SampleCNN-family run, got {config.kind}")
        if config.sample_rate != info.sample_rate:
            raise DataError(
                f"{source} was trained at {config.sample_rate} Hz but {data} is at {info.sample_rate} Hz; "
                f"rebuild the TFRecords with --sample-rate {config.sample_rate}"
            )
        models.append(model)
    segment_length = max(int(config_from_model(m).input_length) for m in models)  # type: ignore[attr-defined]
    features_model = multi_scale_features(models)
    splits = {}
    for split in ("train", "validation"):
        splits[split] = clip_features(features_model, data, split, segment_length=segment_length, info=info)
    x_train, y_train = splits["train"][1], splits["train"][2]
    x_valid, y_valid = splits["validation"][1], splits["validation"][2]
    multi_label = bool(info.multi_label)
    activation = "sigmoid" if multi_label else "softmax"
    classifier = transfer_classifier(
        n_features=x_train.shape[1], n_outputs=info.num_labels, hidden_units=hidden_units, dropout=dropout,
        output_activation=activation,
    )
    opt: Any = (
        keras.optimizers.Adam(learning_rate)
        if optimizer == "adam"
        else keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    )
    classifier.compile(
        optimizer=opt,
        loss="binary_crossentropy" if multi_label else "categorical_crossentropy",
        metrics=["auc" if multi_label else "accuracy"],
    )
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=3, min_lr=learning_rate * 0.2**4),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=8, restore_best_weights=True),
    ]
    history = classifier.fit(
        x_train, y_train, validation_data=(x_valid, y_valid), epochs=epochs, batch_size=batch_size,
        callbacks=callbacks, verbose=0,
    )
    full = aggregation_model(models, n_outputs=info.num_labels, hidden_units=hidden_units, dropout=dropout,
                             output_activation=activation)
    for name in [layer.name for layer in classifier.layers if layer.weights]:
        full.get_layer(name).set_weights(classifier.get_layer(name).get_weights())
    best = float(min(history.history["val_loss"]))
    run_info = RunInfo(
        model=config_from_model(full),
        labels=tuple(info.label_names),
        task="multi-label" if multi_label else "single-label",
        audio=AudioConfig(sample_rate=info.sample_rate),
        segment=SegmentConfig(length=segment_length),
        extra={"transfer": "features", "sources": [os.path.abspath(s) for s in sources],
               "dataset": os.path.abspath(data), "n_features": int(x_train.shape[1]), "best_val_loss": best,
               **run_extra(data)},
    )
    save_run(run_dir, full, run_info)
    return TransferResult(run_dir, int(x_train.shape[1]), len(history.history["val_loss"]), best, time.time() - start)
