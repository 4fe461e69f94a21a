"""Evaluation metrics: song-level scores from segment predictions, tagging AUCs, genre accuracy.

The papers' test protocol: a track's score is the average of its segments' scores
(Lee et al.: the 10 segments of a 29.1 s clip). Tagging is scored with ROC-AUC and
PR-AUC (average precision) per tag and macro-averaged; single-label genres with
accuracy and a confusion matrix. Metrics come from scikit-learn; a tag whose test
set has only one class has no AUC and is reported as skipped, not as NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

from tfaural.errors import ParameterError

__all__ = ["average_segments", "tagging_scores", "classification_scores", "evaluate_predictions"]


def average_segments(segment_scores: np.ndarray) -> np.ndarray:
    """Song-level scores: the mean over a track's segments.

    Args:
        segment_scores: float ``[n_segments, n_labels]`` for one track.

    Returns:
        float ``[n_labels]``.
    """
    scores = np.asarray(segment_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ParameterError(f"segment scores must be [n_segments >= 1, n_labels], got shape {scores.shape}")
    return scores.mean(axis=0)


def _check(y_true: np.ndarray, y_score: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ParameterError(f"y_true {y_true.shape} and y_score {y_score.shape} must both be [n_tracks, n_labels]")
    if y_true.shape[1] != len(labels):
        raise ParameterError(f"{y_true.shape[1]} label columns but {len(labels)} label names")
    if y_true.shape[0] == 0:
        raise ParameterError("no tracks to evaluate")
    if not np.isfinite(y_score).all():
        raise ParameterError("scores contain NaN or Inf")
    return y_true, y_score


def tagging_scores(y_true: np.ndarray, y_score: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Per-tag and macro ROC-AUC and PR-AUC.

    Args:
        y_true: 0/1 ``[n_tracks, n_labels]``.
        y_score: Scores ``[n_tracks, n_labels]`` (e.g. averaged sigmoid outputs).
        labels: Tag names.

    Returns:
        ``{"roc_auc_macro", "pr_auc_macro", "per_tag": {tag: {"roc_auc", "pr_auc", "positives"}},
        "skipped_tags": [...]}``; macro averages over the tags that have both classes.
    """
    y_true, y_score = _check(y_true, y_score, labels)
    per_tag: dict[str, dict[str, float]] = {}
    skipped = []
    for i, tag in enumerate(labels):
        positives = int(y_true[:, i].sum())
        if positives == 0 or positives == y_true.shape[0]:
            skipped.append(tag)
            continue
        per_tag[tag] = {
            "roc_auc": float(skm.roc_auc_score(y_true[:, i], y_score[:, i])),
            "pr_auc": float(skm.average_precision_score(y_true[:, i], y_score[:, i])),
            "positives": positives,
        }
    roc = [v["roc_auc"] for v in per_tag.values()]
    pr = [v["pr_auc"] for v in per_tag.values()]
    return {
        "roc_auc_macro": float(np.mean(roc)) if roc else None,
        "pr_auc_macro": float(np.mean(pr)) if pr else None,
        "per_tag": per_tag,
        "skipped_tags": skipped,
    }


def classification_scores(y_true: np.ndarray, y_score: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class recall and the confusion matrix of single-label predictions.

    Args:
        y_true: One-hot ``[n_tracks, n_classes]``.
        y_score: Scores ``[n_tracks, n_classes]``; the prediction is the arg-max.
        labels: Class names.

    Returns:
        ``{"accuracy", "balanced_accuracy", "chance", "confusion_matrix" (rows: true,
        columns: predicted), "labels", "per_class_recall"}``.
    """
    y_true, y_score = _check(y_true, y_score, labels)
    truth = np.argmax(y_true, axis=1)
    predicted = np.argmax(y_score, axis=1)
    matrix = skm.confusion_matrix(truth, predicted, labels=list(range(len(labels))))
    support = matrix.sum(axis=1)
    recall = {labels[i]: float(matrix[i, i] / support[i]) for i in range(len(labels)) if support[i]}
    present = np.unique(truth)
    return {
        "accuracy": float(skm.accuracy_score(truth, predicted)),
        "balanced_accuracy": float(np.mean([recall[labels[i]] for i in present])),
        "chance": float(np.max(np.bincount(truth, minlength=len(labels))) / len(truth)),
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
        "per_class_recall": recall,
    }


def evaluate_predictions(
    y_true: np.ndarray, y_score: np.ndarray, labels: Sequence[str], *, multi_label: bool
) -> dict[str, Any]:
    """Tagging scores for multi-label tasks; classification (plus AUCs) for single-label ones."""
    if multi_label:
        return {"task": "multi-label", **tagging_scores(y_true, y_score, labels)}
    result = {"task": "single-label", **classification_scores(y_true, y_score, labels)}
    result["tagging"] = tagging_scores(y_true, y_score, labels)
    return result
