"""Prediction sets (`emo.conformal`) against crepes, a maintained conformal library, and their guarantee on made-up
probabilities of known calibration: coverage within its finite-sample bounds over many draws, marginal and per class."""

import math

import numpy as np
import pytest
from crepes import ConformalClassifier

from emo.calibration import softmax
from emo.conformal import class_scores, fewest_examples, fit_sets, membership, prediction_sets
from emo.fit.prediction_sets import set_scores


def calibrated(n: int, k: int, generator, scale: float = 2.5, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: a perfectly calibrated model (labels skewed by `weights`)."""
    logits = generator.normal(0, scale, (n, k)) + (np.log(weights) if weights is not None else 0)
    probabilities = softmax(logits)
    labels = (probabilities.cumsum(axis=1) < generator.random((n, 1))).sum(axis=1)
    return probabilities, np.minimum(labels, k - 1)


@pytest.mark.parametrize("class_conditional", [False, True])
@pytest.mark.parametrize("score", ["lac", "aps"])
def test_the_sets_are_crepes_sets_on_the_same_scores(score, class_conditional):
    generator = np.random.default_rng(0)
    alpha, k = 0.1, 6
    fit_p, fit_y = calibrated(1000, k, generator)
    test_p, _ = calibrated(500, k, generator)
    record = fit_sets(fit_p, fit_y, alpha, score, class_conditional)
    true_scores = class_scores(fit_p, score)[np.arange(len(fit_y)), fit_y]
    test_scores = class_scores(test_p, score)
    reference = ConformalClassifier()
    # Conformal p-values (unsmoothed: no random draw); a class is in the set when its p-value exceeds alpha.
    if class_conditional:  # Mondrian by class: each class's p-values from its own examples
        reference.fit(true_scores, bins=fit_y)
        p_values = np.column_stack([
            reference.predict_p(test_scores[:, [c]], bins=np.full(len(test_p), c), smoothing=False)[:, 0]
            for c in range(k)
        ])  # fmt: skip
        assert len(set(record["thresholds"])) == k  # a threshold of each class's own
    else:
        reference.fit(true_scores)
        p_values = reference.predict_p(test_scores, smoothing=False)
    expected = p_values > alpha
    assert np.array_equal(membership(test_p, record), expected)


@pytest.mark.parametrize("alpha", [0.1, 0.05])
@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_coverage_over_many_draws_lies_within_its_finite_sample_bounds(alpha, score):
    """Split conformal: the expected coverage is at least 1 - alpha and, for continuous scores, below
    1 - alpha + 1 / (n + 1) (Angelopoulos and Bates, Theorem D.1). Averaged over 300 calibration draws of n = 500."""
    generator = np.random.default_rng(1)
    n, draws, k = 500, 300, 6
    covered = []
    for _ in range(draws):
        fit_p, fit_y = calibrated(n, k, generator)
        test_p, test_y = calibrated(400, k, generator)
        record = fit_sets(fit_p, fit_y, alpha, score)
        covered.append(membership(test_p, record)[np.arange(len(test_y)), test_y].mean())
    mean, error = np.mean(covered), 3 * np.std(covered) / math.sqrt(draws)
    assert 1 - alpha - error <= mean
    if score != "aps":  # non-randomized APS is conservative: its upper bound does not hold
        assert mean <= 1 - alpha + 1 / (n + 1) + error


def test_class_conditional_sets_cover_every_class_where_marginal_ones_do_not():
    """A rare class the model is unsure of: marginal sets cover it less than 1 - alpha, per-class sets cover each."""
    generator = np.random.default_rng(2)
    alpha, k, weights = 0.1, 4, np.array([0.6, 0.25, 0.1, 0.05])
    marginal, per_class = [], []
    for _ in range(60):
        fit_p, fit_y = calibrated(2000, k, generator, scale=1.2, weights=weights)
        test_p, test_y = calibrated(2000, k, generator, scale=1.2, weights=weights)
        for store, conditional in ((marginal, False), (per_class, True)):
            inside = membership(test_p, fit_sets(fit_p, fit_y, alpha, "lac", conditional))
            store.append([inside[test_y == c, c].mean() for c in range(k)])
    assert np.mean(marginal, axis=0)[3] < 1 - alpha - 0.05  # the rare class, under-covered on average
    assert (np.mean(per_class, axis=0) >= 1 - alpha - 0.01).all()


def test_sets_list_their_classes_most_probable_first_and_can_be_empty():
    record = {"score": "lac", "raps_lambda": 0.0, "raps_k": 1, "thresholds": [0.6] * 3, "alpha": 0.1}
    probabilities = np.array([[0.2, 0.5, 0.3], [0.41, 0.14, 0.45], [0.35, 0.33, 0.32]])
    assert prediction_sets(probabilities, record) == [[1], [2, 0], []]  # the last: no class at 0.4 or more


def test_raps_adds_its_penalty_to_each_class_ranked_beyond_the_first_k():
    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    aps = class_scores(probabilities, "aps")
    assert np.allclose(aps, [[1.0, 0.6, 0.9], [0.5, 1.0, 0.8]])  # the mass at least as probable
    raps = class_scores(probabilities, "raps", raps_lambda=0.1, raps_k=1)
    assert np.allclose(raps - aps, [[0.2, 0.0, 0.1], [0.0, 0.2, 0.1]])  # ranks 3, 1, 2 and 1, 3, 2


def test_too_few_held_out_examples_for_an_alpha_are_refused():
    assert fewest_examples(0.1) == 9 and fewest_examples(0.05) == 19
    probabilities, labels = calibrated(8, 3, np.random.default_rng(4))
    with pytest.raises(ValueError, match="8 held-out examples are too few for alpha 0.1 \\(at least 9\\)"):
        fit_sets(probabilities, labels, 0.1)
    probabilities, labels = calibrated(50, 3, np.random.default_rng(5))
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have no held-out example"):
        fit_sets(probabilities[labels != 2], labels[labels != 2], 0.1, class_conditional=True)


def test_set_scores_are_coverage_size_and_their_intervals():
    inside = np.array([[True, False], [True, True], [False, False], [False, True]])
    labels = np.array([0, 1, 0, 0])
    scores = set_scores(inside, labels, ["a", "b"], draws=500)
    assert scores["coverage"] == 0.5 and scores["set_size"] == 1.0
    assert (scores["size_0_share"], scores["size_1_share"], scores["size_2plus_share"]) == (0.25, 0.5, 0.25)
    assert scores["coverage_a"] == pytest.approx(1 / 3) and scores["coverage_b"] == 1.0
    assert scores["coverage_low"] <= 0.5 <= scores["coverage_high"]
