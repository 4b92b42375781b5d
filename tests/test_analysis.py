"""Error analysis and the paired bootstrap, on predictions made up to have known answers."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from emo.analysis import (
    accuracy_and_macro_f1,
    confident_mistakes,
    confusion_counts,
    paired_bootstrap,
    predictions_frame,
)
from emo.data.fetch import CARER_LABELS


def frame(truth: list[int], predicted: list[int], confidence: float = 0.9) -> pd.DataFrame:
    probabilities = np.full((len(truth), len(CARER_LABELS)), (1 - confidence) / (len(CARER_LABELS) - 1))
    probabilities[np.arange(len(truth)), predicted] = confidence
    return predictions_frame(
        [f"text {i}" for i in range(len(truth))], truth, probabilities, CARER_LABELS, range(len(truth))
    )


def test_macro_f1_and_accuracy_match_scikit_learn():
    generator = np.random.default_rng(1)
    truth = generator.integers(0, 6, 500)
    predicted = np.where(generator.random(500) < 0.7, truth, generator.integers(0, 6, 500))
    weights = np.vstack([np.ones(500), generator.multinomial(500, np.full(500, 1 / 500), size=3)])
    accuracy, macro = accuracy_and_macro_f1(confusion_counts(truth, predicted, weights, 6))
    assert accuracy[0] == pytest.approx((truth == predicted).mean())
    assert macro[0] == pytest.approx(f1_score(truth, predicted, average="macro"))
    drawn = np.repeat(np.arange(500), weights[1].astype(int))  # a resample is the same examples, repeated
    assert macro[1] == pytest.approx(f1_score(truth[drawn], predicted[drawn], average="macro"))


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
