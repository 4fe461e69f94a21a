"""tfaural.training.metrics on inputs whose answers are known, and against scikit-learn's averages."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tfaural.errors import ParameterError
from tfaural.training import metrics


def test_average_segments_is_the_mean() -> None:
    scores = np.array([[0.2, 0.8], [0.4, 0.6], [0.0, 1.0]])
    np.testing.assert_allclose(metrics.average_segments(scores), [0.2, 0.8])
    with pytest.raises(ParameterError):
        metrics.average_segments(np.zeros((0, 2)))


def test_tagging_scores_hand_computed() -> None:
    y_true = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    # tag a: positives score 0.9, 0.4; negatives 0.5, 0.1 -> 3 of 4 pairs ordered -> AUC 0.75
    # tag b: perfectly ranked -> AUC 1.0, AP 1.0
    y_score = np.array([[0.9, 0.1], [0.4, 0.8], [0.5, 0.7], [0.1, 0.2]])
    result = metrics.tagging_scores(y_true, y_score, ["a", "b"])
    assert result["per_tag"]["a"]["roc_auc"] == pytest.approx(0.75)
    assert result["per_tag"]["b"]["roc_auc"] == pytest.approx(1.0)
    assert result["per_tag"]["b"]["pr_auc"] == pytest.approx(1.0)
    # AP of tag a: ranking 0.9(+), 0.5(-), 0.4(+), 0.1(-) -> (1/1 + 2/3) / 2
    assert result["per_tag"]["a"]["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert result["roc_auc_macro"] == pytest.approx(0.875)


def test_tagging_macro_equals_sklearn_and_skips_single_class_tags(rng: np.random.Generator) -> None:
    y_true = (rng.random((50, 6)) < 0.3).astype(int)
    y_true[:, 5] = 0  # a tag with no positives in the test set
    y_score = rng.random((50, 6)) + 0.3 * y_true
    result = metrics.tagging_scores(y_true, y_score, list("abcdef"))
    assert result["skipped_tags"] == ["f"]
    assert result["roc_auc_macro"] == pytest.approx(roc_auc_score(y_true[:, :5], y_score[:, :5], average="macro"))
    assert result["pr_auc_macro"] == pytest.approx(
        average_precision_score(y_true[:, :5], y_score[:, :5], average="macro"))


def test_classification_scores() -> None:
    labels = ["ballad", "dance", "hiphop"]
    truth = np.eye(3)[[0, 0, 1, 1, 2, 2]]
    scores = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.9 + 0.05
    result = metrics.classification_scores(truth, scores, labels)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result["per_class_recall"] == {"ballad": 0.5, "dance": 1.0, "hiphop": 0.5}
    assert result["chance"] == pytest.approx(1 / 3)


def test_bad_inputs() -> None:
    with pytest.raises(ParameterError, match="must both be"):
        metrics.tagging_scores(np.zeros((3, 2)), np.zeros((3, 3)), ["a", "b"])
    with pytest.raises(ParameterError, match="NaN"):
        metrics.tagging_scores(np.eye(2), np.full((2, 2), np.nan), ["a", "b"])
