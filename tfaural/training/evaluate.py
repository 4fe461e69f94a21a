"""Song-level evaluation of a training run: ``python -m tfaural.training.evaluate``.

Every track of the chosen split is cut into its contiguous segments (the
SampleCNN protocol keeps 10 of a 29.1 s clip), the model scores each segment and
the track's score is their average. Tagging runs are scored with per-tag and macro
ROC-AUC and PR-AUC, single-label runs with accuracy and a confusion matrix (plus
the AUCs). Results go to ``RUN_DIR/eval.json`` (or ``eval-<split>.json``), per-track
scores to ``predictions-<split>.csv`` and a figure to ``eval-<split>.png``.

The data is a TFRecord dataset folder or a prepared TFDS dataset name (as for
training, see :mod:`tfaural.data.tfds_source`); without ``--data`` the run's own
dataset is used: the TFDS dataset recorded in ``run.json`` (found again by name,
version and split mapping, converted again if its cache is gone) or the folder it
was trained on.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tfaural.cli import HelpFormatter, add_verbose_flag, check_output_folder
from tfaural.errors import DataError, TfauralError
from tfaural.training import metrics
from tfaural.training.run import RunInfo, load_run
from tfaural.training.train import add_tfds_arguments, tfds_options

if TYPE_CHECKING:
    from tfaural.data.tfds_source import TfdsOptions

__all__ = ["evaluate_run", "dataset_of_run", "plot_evaluation", "main"]

logger = logging.getLogger(__name__)


def dataset_of_run(
    run_dir: str,
    info: RunInfo,
    data: str | None = None,
    tfds: TfdsOptions | None = None,
    *,
    split: str = "test",
    progress: bool = True,
) -> str:
    """The dataset folder to evaluate a run on.

    Args:
        run_dir: Training run directory (for messages).
        info: Its :class:`~tfaural.training.run.RunInfo`.
        data: A dataset folder or TFDS name; ``None``: the run's own dataset.
        tfds: TFDS options; with ``data=None`` only ``data_dir`` and ``cache_dir`` apply
            (they override the recorded ones), the split mapping and label come from ``run.json``.
        split: The split that will be evaluated (must exist).
        progress: Show a progress bar if a TFDS dataset has to be converted.

    Returns:
        A dataset folder.

    Raises:
        DataError: If the dataset cannot be found or prepared.
    """
    from tfaural.data.tfds_source import prepare_tfds, read_tfds_source, resolve_data, source_of_run

    if data is not None:
        return resolve_data(data, tfds, require_splits=(split,), progress=progress)
    recorded = source_of_run(info.extra)
    if recorded is not None:
        source, cache_dir = recorded
        folder = prepare_tfds(
            source.pinned_name,
            data_dir=(tfds.data_dir if tfds else None) or source.data_dir,
            cache_dir=(tfds.cache_dir if tfds else None) or cache_dir,
            splits=source.splits, label=source.label_feature, require_splits=(split,), progress=progress,
        )
        now = read_tfds_source(folder)
        if now is not None and now.fingerprint != source.fingerprint:
            logger.warning("TFDS dataset %s was prepared again after %s was trained; evaluating on the files "
                           "prepared now", source.full_name, run_dir)
        return folder
    dataset = info.extra.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise DataError(f"{run_dir}: run.json does not record the dataset it was trained on; pass --data")
    return dataset


def _shared_labels(
    data: str, dataset_labels: tuple[str, ...], info: Any
) -> tuple[list[int], list[int], tuple[str, ...]]:
    """Columns of the dataset's and the model's labels to compare, and their names.

    Equal label lists compare everything. A multi-label model whose tags include some of the
    dataset's is compared on the shared tags (dataset order).

    Raises:
        DataError: If the labels differ and the model is single-label or shares no tag.
    """
    model_labels = tuple(info.labels)
    if dataset_labels == model_labels:
        every = list(range(len(model_labels)))
        return every, every, model_labels
    shared = tuple(name for name in dataset_labels if name in model_labels)
    if info.task != "multi-label" or not shared:
        raise DataError(f"{data}: its labels {list(dataset_labels)} differ from the run's {list(model_labels)}"
                        + ("" if info.task != "multi-label" else " and share none of them"))
    logger.info("evaluating the %d tag(s) the model and the dataset share: %s", len(shared), ", ".join(shared))
    return ([dataset_labels.index(n) for n in shared], [model_labels.index(n) for n in shared], shared)


def evaluate_run(
    run_dir: str,
    data: str | None = None,
    *,
    split: str = "test",
    segments_per_track: int | None = 10,
    write: bool = True,
    progress: bool = True,
    tfds: TfdsOptions | None = None,
) -> dict[str, Any]:
    """Scores a run's best model on one split of a TFRecord dataset.

    Args:
        run_dir: Training run directory.
        data: Dataset folder (``dataset.json`` + shards) or a prepared TFDS dataset name
            (``None``: the dataset the run was trained on, see :func:`dataset_of_run`).
        split: Split to evaluate.
        segments_per_track: Segments averaged per track (``None``: all).
        write: Write ``eval*.json``, ``predictions-<split>.csv`` and the figure into ``run_dir``.
        progress: Show a progress bar.
        tfds: Where TFDS names are found and converted (``None``: the defaults).

    A multi-label run (e.g. an imported pretrained tagger) can be evaluated on a dataset
    whose tags are a subset of its own: the scores of the shared tags are compared with
    the dataset's labels and the result lists ``labels_ignored`` (dataset tags the model
    does not have) and ``model_labels_unused``.

    Returns:
        The evaluation dict (see :func:`tfaural.training.metrics.evaluate_predictions`) with
        ``split``, ``n_tracks`` and ``segments_per_track`` added.

    Raises:
        DataError: If the dataset does not match the run (labels, rate) or the split is empty.
        ParameterError: If ``write`` and ``run_dir`` cannot be written.
    """
    import tensorflow as tf
    from tqdm.auto import tqdm

    from tfaural.data.pipeline import make_track_dataset, model_family
    from tfaural.data.tfrecord import read_dataset_info, shard_pattern

    if write:
        check_output_folder(run_dir, flag="--run")  # eval.json goes there: fail now, not after the evaluation
    model, info = load_run(run_dir)
    data = dataset_of_run(run_dir, info, data, tfds, split=split, progress=progress)
    dataset = read_dataset_info(data)
    data_columns, model_columns, compared = _shared_labels(data, tuple(dataset.label_names), info)
    if dataset.count(split, "tracks") == 0 and dataset.count(split) == 0:
        raise DataError(f"{data}: split {split!r} is empty (dataset.json lists {sorted(dataset.splits)})")
    tracks = make_track_dataset(
        shard_pattern(data, split),
        family=model_family(info.model),
        segment_length=info.segment.length,
        segments_per_track=segments_per_track,
        stft=info.stft,
        sample_rate=info.audio.sample_rate,
        info=dataset,
    )
    predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    ids, truths, scores = [], [], []
    total = dataset.count(split, "tracks") or None
    for track_id, inputs, labels in tqdm(tracks, total=total, desc=f"evaluating {split}", disable=not progress):
        segment_scores = predict(inputs).numpy()
        ids.append(track_id.numpy().decode())
        truths.append(labels.numpy())
        scores.append(metrics.average_segments(segment_scores))
    if not ids:
        raise DataError(f"{data}: no tracks could be read from split {split!r}")
    y_true, y_score = np.stack(truths)[:, data_columns], np.stack(scores)[:, model_columns]
    result = metrics.evaluate_predictions(y_true, y_score, compared, multi_label=info.task == "multi-label")
    if compared != tuple(info.labels) or compared != tuple(dataset.label_names):
        result["labels_evaluated"] = list(compared)
        result["labels_ignored"] = [name for name in dataset.label_names if name not in compared]
        result["model_labels_unused"] = [name for name in info.labels if name not in compared]
    result.update({"split": split, "n_tracks": len(ids), "segments_per_track": segments_per_track,
                   "run_id": info.run_id})
    if write:
        name = "eval.json" if split == "test" else f"eval-{split}.json"
        with open(os.path.join(run_dir, name), "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
        with open(os.path.join(run_dir, f"predictions-{split}.csv"), "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["track_id", *[f"true:{n}" for n in compared], *[f"score:{n}" for n in compared]])
            for track_id, t, s in zip(ids, y_true, y_score):
                writer.writerow([track_id, *t.astype(int).tolist(), *[f"{v:.6f}" for v in s]])
        result["figure"] = plot_evaluation(result, os.path.join(run_dir, f"eval-{split}.png"))
    return result


def plot_evaluation(result: dict[str, Any], path: str) -> str:
    """Confusion matrix (single-label) or per-tag ROC-AUC bars (multi-label) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if result["task"] == "single-label":
        matrix = np.asarray(result["confusion_matrix"])
        labels = result["labels"]
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(labels), 0.8 + 0.7 * len(labels)))
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > matrix.max() / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"accuracy {result['accuracy']:.3f} (chance {result['chance']:.3f}), {result['n_tracks']} tracks")
    else:
        per_tag = result["per_tag"]
        tags = sorted(per_tag, key=lambda t: per_tag[t]["roc_auc"])
        fig, ax = plt.subplots(figsize=(6, 0.25 * len(tags) + 1.2))
        ax.barh(tags, [per_tag[t]["roc_auc"] for t in tags], color="tab:blue")
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("ROC-AUC")
        ax.set_title(f"macro ROC-AUC {result['roc_auc_macro']:.3f}, PR-AUC {result['pr_auc_macro']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="python -m tfaural.training.evaluate",
        description="Song-level evaluation of a training run: segment predictions averaged per track, "
        "ROC-AUC/PR-AUC for tags, accuracy and a confusion matrix for genres. Writes eval.json and a figure "
        "into the run directory.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument("--data", default=None, metavar="DATASET_DIR_OR_TFDS_NAME",
                        help="dataset folder (dataset.json + shards) or a prepared TFDS dataset name (default: the "
                        "dataset the run was trained on, as recorded in its run.json)")
    parser.add_argument("--split", default="test", help="split to evaluate")
    parser.add_argument("--segments-per-track", type=int, default=10, help="segments averaged per track (0: all)")
    add_tfds_arguments(parser)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = evaluate_run(args.run, args.data, split=args.split,
                              segments_per_track=args.segments_per_track or None, tfds=tfds_options(args))
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result["task"] == "single-label":
        print(f"{result['split']}: accuracy {result['accuracy']:.3f} over {result['n_tracks']} tracks "
              f"(chance {result['chance']:.3f}); figure {result.get('figure')}")
    else:
        print(f"{result['split']}: macro ROC-AUC {result['roc_auc_macro']:.3f}, PR-AUC {result['pr_auc_macro']:.3f} "
              f"over {result['n_tracks']} tracks; figure {result.get('figure')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
