"""Error analysis and the paired bootstrap, on predictions made up to have known answers."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from emo.analysis import (
    confident_mistakes,
    confusion_counts,
    confusion_metric,
    paired_bootstrap,
    predictions_frame,
)
from emo.data.fetch import CARER_LABELS
from emo.export.parity import macro_f1


def frame(truth: list[int], predicted: list[int], confidence: float = 0.9) -> pd.DataFrame:
    probabilities = np.full((len(truth), len(CARER_LABELS)), (1 - confidence) / (len(CARER_LABELS) - 1))
    probabilities[np.arange(len(truth)), predicted] = confidence
    return predictions_frame(
        [f"text {i}" for i in range(len(truth))], truth, probabilities, CARER_LABELS, range(len(truth))
    )


@pytest.mark.parametrize("absent", [False, True])
def test_every_confusion_metric_matches_scikit_learn_also_with_a_class_nobody_has(absent):
    """The one macro F1 (and its kin) that the metrics, the paired bootstrap and an export's parity use; a class absent
    from truth and predictions counts for nothing in the macro mean, as in scikit-learn and torchmetrics."""
    generator = np.random.default_rng(1)
    k = 6
    truth = generator.integers(0, k - absent, 500)
    predicted = np.where(generator.random(500) < 0.7, truth, generator.integers(0, k - absent, 500))
    weights = np.vstack([np.ones(500), generator.multinomial(500, np.full(500, 1 / 500), size=3)])
    confusion = confusion_counts(truth, predicted, weights, k)
    drawn = np.repeat(np.arange(500), weights[1].astype(int))  # a resample is the same examples, repeated
    labels = list(CARER_LABELS)
    expected = {
        "acc": accuracy_score(truth, predicted),
        "f1_macro": f1_score(truth, predicted, average="macro"),
        "f1_weighted": f1_score(truth, predicted, average="weighted"),
        "f1_joy": f1_score(truth, predicted, average=None, labels=range(k))[1],
        "precision_love": precision_score(truth, predicted, average=None, labels=range(k), zero_division=0)[2],
        "recall_anger": recall_score(truth, predicted, average=None, labels=range(k), zero_division=0)[3],
    }
    for key, value in expected.items():
        assert confusion_metric(confusion, key, labels)[0] == pytest.approx(value), key
    assert confusion_metric(confusion, "f1_macro", labels)[1] == pytest.approx(
        f1_score(truth[drawn], predicted[drawn], average="macro")
    )
    assert macro_f1(truth, predicted, k) == pytest.approx(expected["f1_macro"])  # an export's parity


def test_a_clearly_better_run_has_an_interval_above_zero():
    generator = np.random.default_rng(0)
    truth = list(generator.integers(0, 6, 400))
    good = [t if generator.random() < 0.95 else (t + 1) % 6 for t in truth]
    poor = [t if generator.random() < 0.75 else (t + 1) % 6 for t in truth]
    result = paired_bootstrap([frame(truth, good)], [frame(truth, poor)], CARER_LABELS, draws=2000)
    for metric in ("acc", "f1_macro"):
        r = result[metric]
        assert r["difference"] == pytest.approx(r["a"] - r["b"]) and 0 < r["low"] < r["difference"] < r["high"]
        assert r["p_b_better"] == 0
    assert result["acc"]["a"] == pytest.approx(np.mean(np.array(good) == np.array(truth)))


def test_identical_runs_differ_by_nothing_and_groups_average_their_runs():
    truth = [0, 1, 2, 3, 4, 5] * 20
    right, wrong = frame(truth, truth), frame(truth, [(t + 1) % 6 for t in truth])
    same = paired_bootstrap([right], [right], CARER_LABELS, draws=500)
    assert same["acc"]["difference"] == same["acc"]["low"] == same["acc"]["high"] == 0
    half = paired_bootstrap([right, wrong], [right], CARER_LABELS, draws=500)  # a group: the mean of its runs
    assert half["acc"]["a"] == pytest.approx(0.5) and half["acc"]["difference"] == pytest.approx(-0.5)


def test_runs_on_different_examples_are_refused():
    with pytest.raises(ValueError, match="different examples"):
        paired_bootstrap([frame([0, 1, 2], [0, 1, 2])], [frame([0, 1, 1], [0, 1, 1])], CARER_LABELS)


def test_confident_mistakes_are_the_surest_wrong_answers():
    predictions = frame([0, 1, 2, 3], [0, 2, 3, 3])
    predictions.loc[1, "confidence"], predictions.loc[2, "confidence"] = 0.6, 0.99
    mistakes = confident_mistakes(predictions, n=5)
    assert mistakes["example"].tolist() == [2, 1]
    assert mistakes[["label", "predicted"]].values.tolist() == [["love", "anger"], ["joy", "love"]]
