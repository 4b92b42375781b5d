"""Calibration on logits made up to have known answers: the temperature recovered, ECE as torchmetrics computes it,
its bootstrap interval, and the temperature folded into real (tiny, random) Hugging Face classifier heads."""

import importlib.util

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError
from transformers import AutoModelForSequenceClassification, DistilBertConfig, MPNetConfig, RobertaConfig

from emo.calibration import (
    ece_bootstrap,
    expected_calibration_error,
    fit_temperature,
    fit_top_label_map,
    log_probabilities,
    nll,
    reliability_figure,
    scale_classifier_head,
    scaled_probabilities,
    softmax,
)
from emo.export.served import top_label_calibrated
from helpers.data import ROOT


def tempered_examples(temperature: float, n: int = 20_000, k: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits z and labels drawn from softmax(z / temperature): the calibrating temperature is `temperature`."""
    generator = np.random.default_rng(seed)
    logits = generator.normal(0, 3, (n, k))
    probabilities = softmax(logits / temperature)
    labels = (probabilities.cumsum(axis=1) < generator.random((n, 1))).sum(axis=1)
    return logits, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_temperature_scaling_recovers_a_known_temperature_and_keeps_the_argmax(temperature):
    logits, labels = tempered_examples(temperature)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(temperature, rel=0.05)
    calibrated = scaled_probabilities(logits, fitted)
    assert (calibrated.argmax(axis=1) == logits.argmax(axis=1)).all()
    assert nll(calibrated, labels) <= nll(softmax(logits), labels)
    # the fitted temperature is the minimum of the NLL: a step either side is worse
    for other in (fitted * 0.97, fitted * 1.03):
        assert nll(scaled_probabilities(logits, other), labels) > nll(calibrated, labels)


def test_log_probabilities_fit_the_same_temperature_as_logits():
    logits, labels = tempered_examples(2.0, n=5000)
    from_probabilities = fit_temperature(log_probabilities(softmax(logits).astype(np.float32)), labels)
    assert from_probabilities == pytest.approx(fit_temperature(logits, labels), rel=1e-3)


def test_a_temperature_outside_the_range_stops_at_its_end():
    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 50)
    assert fit_temperature(logits, np.array([0, 1] * 50)) == 0.05  # always right: as sharp as allowed
    assert fit_temperature(logits, np.array([1, 0] * 50)) == 20.0  # always wrong: as flat as allowed


@pytest.mark.parametrize("bins", [15, 10])
def test_ece_equals_torchmetrics(bins):
    generator = np.random.default_rng(3)
    probabilities = softmax(generator.normal(0, 2, (3000, 6)) * generator.uniform(0.2, 3, (3000, 1)))
    labels = np.where(generator.random(3000) < 0.8, probabilities.argmax(axis=1), generator.integers(0, 6, 3000))
    reference = MulticlassCalibrationError(num_classes=6, n_bins=bins, norm="l1")
    expected = reference(torch.tensor(probabilities, dtype=torch.float32), torch.tensor(labels)).item()
    assert expected_calibration_error(probabilities, labels, bins) == pytest.approx(expected, abs=1e-6)
    one_hot = np.eye(6)[labels]  # confidence exactly 1, always right: calibrated
    assert expected_calibration_error(one_hot, labels) == 0


def test_the_bootstrap_interval_covers_a_known_calibration_error():
    generator = np.random.default_rng(4)
    n = 2000
    labels = generator.integers(0, 6, n)
    predicted = np.where(generator.random(n) < 0.8, labels, (labels + 1) % 6)  # right 80 % of the time
    probabilities = np.full((n, 6), 0.1 / 5)
    probabilities[np.arange(n), predicted] = 0.9  # but 90 % sure: an ECE of 0.1
    result = ece_bootstrap(probabilities, labels, draws=1000)
    assert result["low"] < 0.1 < result["high"] and result["low"] < result["ece"] < result["high"]
    assert 0.01 < result["high"] - result["low"] < 0.06  # on 2,000 examples, a point or two each side
    fair = np.full((n, 6), 0.2 / 5)
    fair[np.arange(n), predicted] = 0.8
    paired = ece_bootstrap(fair, labels, draws=1000, reference=probabilities)
    assert paired["change"] == pytest.approx(paired["ece"] - result["ece"])
    assert paired["change_low"] < -0.05 and paired["change_high"] < 0  # clearly better, on the same resamples


def test_reliability_figure_shows_the_ece_in_its_title():
    logits, labels = tempered_examples(2.0, n=2000)
    probabilities = softmax(logits)
    figure = reliability_figure(probabilities, labels, bins=15, title="test")
    assert f"ECE {expected_calibration_error(probabilities, labels):.4f}" in figure.axes[0].get_title()


TINY = {
    "vocab_size": 120,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 16,
    "max_position_embeddings": 40,
}
HEADS = {
    # hidden size = number of labels: the head's inner dense layer has as many outputs, and must stay as it is
    "mpnet": lambda: MPNetConfig(**TINY, hidden_size=8, num_labels=8),
    "roberta": lambda: RobertaConfig(**TINY, hidden_size=8, num_labels=6),
    "distilbert": lambda: DistilBertConfig(vocab_size=120, dim=8, n_layers=1, n_heads=2, hidden_dim=16, num_labels=8),
}


def logits_of(model, input_ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits


@pytest.mark.parametrize("family", ["bert", *HEADS])
def test_scaling_the_head_divides_the_saved_model_s_logits_by_the_temperature(family, tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    if family == "bert":
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=6)
    else:
        model = AutoModelForSequenceClassification.from_config(HEADS[family]())
    model.eval()
    expected = "classifier.out_proj" if family in ("mpnet", "roberta") else "classifier"
    with torch.no_grad():  # a fresh head's bias is zero: one left unscaled would not show
        model.get_submodule(expected).bias.normal_(0, 1)
    input_ids = torch.randint(5, 100, (4, 12))
    before = logits_of(model, input_ids)
    layer = scale_classifier_head(model, 2.5)
    assert layer == expected
    model.save_pretrained(tmp_path)
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    after = logits_of(saved, input_ids)
    torch.testing.assert_close(after, before / 2.5, rtol=1e-5, atol=1e-6)
    assert torch.equal(after.argmax(dim=-1), before.argmax(dim=-1))
    assert saved.config.calibration_temperature == 2.5
    scale_classifier_head(saved, 2.0)  # scaled again: the temperatures multiply
    torch.testing.assert_close(logits_of(saved, input_ids), before / 5.0, rtol=1e-5, atol=1e-6)
    assert saved.config.calibration_temperature == 5.0


def test_a_temperature_must_be_positive(tiny_model_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=6)
    for temperature in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            scale_classifier_head(model, temperature)


def script(name: str):
    """A module of scripts/ (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_top_label_map_calibrates_what_one_temperature_cannot_and_keeps_every_predicted_label():
    """Right answers drawn with probability 0.55 + 0.45 c^4 at top probability c (too sure in the middle, right about
    the extremes): no temperature fits that (chosen for NLL or for ECE), the map of c fitted on validation does."""
    generator = np.random.default_rng(1)
    logits = generator.normal(0, 2.5, (20_000, 6))
    probabilities = softmax(logits)
    top = probabilities.argmax(axis=1)
    right = generator.random(len(top)) < 0.55 + 0.45 * probabilities.max(axis=1) ** 4
    wrong = (top + generator.integers(1, 6, len(top))) % 6
    labels = np.where(right, top, wrong)
    val, test = slice(0, 10_000), slice(10_000, None)
    check = script("calibration_check")
    tempered = scaled_probabilities(logits[test], fit_temperature(logits[val], labels[val]))
    mapped = top_label_calibrated(probabilities[test], **fit_top_label_map(probabilities[val], labels[val]))
    assert (mapped.argmax(axis=1) == top[test]).all()
    assert np.allclose(mapped.sum(axis=1), 1)
    floor, floor_95 = check.perfect_floor(mapped.max(axis=1))
    assert expected_calibration_error(mapped, labels[test]) < floor_95 + 0.005
    assert expected_calibration_error(tempered, labels[test]) > 2 * floor_95
    by_ece = scaled_probabilities(logits[test], check.ece_temperature(logits[val], labels[val]))
    assert expected_calibration_error(by_ece, labels[test]) > 2 * floor_95  # nor does the temperature of least ECE


def test_the_top_label_map_is_scikit_learn_s_isotonic_regression_kept_from_changing_a_label():
    from sklearn.isotonic import IsotonicRegression

    generator = np.random.default_rng(2)
    probabilities = softmax(generator.normal(0, 2, (3000, 4)))
    top = probabilities.argmax(axis=1)
    right = generator.random(3000) < 0.8 * probabilities.max(axis=1)  # too sure by a fifth at every confidence
    labels = np.where(right, top, (top + generator.integers(1, 4, 3000)) % 4)
    knots = fit_top_label_map(probabilities, labels)
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(  # and one wrong answer at 1
        np.append(probabilities.max(axis=1), 1.0), np.append(probabilities.argmax(axis=1) == labels, False)
    )
    new = np.array([[0.6, 0.2, 0.1, 0.1], [0.9, 0.05, 0.03, 0.02], [0.4, 0.39, 0.2, 0.01], [1.0, 0.0, 0.0, 0.0]])
    mapped = top_label_calibrated(new, **knots)
    expected = reference.predict(new.max(axis=1))
    assert mapped[:2, 0] == pytest.approx(expected[:2])  # where the label is not at stake: the regression's value
    assert mapped[:2, 1:] / new[:2, 1:] == pytest.approx(((1 - mapped[:2, 0]) / (1 - new[:2, 0]))[:, None] * np.ones(3))
    assert expected[2] < 0.39 and mapped[2, 0] > mapped[2, 1]  # the regression would drop it below the second
    assert mapped[3].tolist() == [1.0, 0.0, 0.0, 0.0]  # a certain row stays certain, nothing divided by zero
    assert (mapped.argmax(axis=1) == new.argmax(axis=1)).all() and np.allclose(mapped.sum(axis=1), 1)


def test_the_top_label_map_never_says_certain_so_a_wrong_answer_keeps_a_finite_log_likelihood():
    generator = np.random.default_rng(3)
    probabilities = softmax(generator.normal(0, 3, (2000, 6)))
    top = probabilities.argmax(axis=1)
    labels = np.where(probabilities.max(axis=1) > 0.9, top, generator.integers(0, 6, 2000))  # always right above 0.9
    knots = fit_top_label_map(probabilities, labels)
    assert max(knots["calibrated"]) < 1
    sure_but_wrong = np.array([[0.999, 0.0005, 0.0003, 0.0001, 0.00005, 0.00005]])
    assert nll(top_label_calibrated(sure_but_wrong, **knots), np.array([1])) < 15


def test_classwise_ece_and_brier_agree_with_torchmetrics_style_metrics_and_scikit_learn():
    from sklearn.metrics import brier_score_loss

    from emo.calibration import brier_score, classwise_ece
    from emo.metrics import BrierScore, ClasswiseCalibrationError

    generator = np.random.default_rng(5)
    logits = generator.normal(0, 2, (3000, 6))
    labels = generator.integers(0, 6, 3000)
    probabilities = softmax(logits)
    assert brier_score(probabilities, labels) == pytest.approx(brier_score_loss(labels, probabilities, labels=range(6)))
    metric = ClasswiseCalibrationError(6, n_bins=15)
    brier = BrierScore(6)
    for rows in np.array_split(np.arange(3000), 7):  # in batches, from logits, as the model updates them
        for m in (metric, brier):
            m.update(torch.tensor(logits[rows], dtype=torch.float32), torch.tensor(labels[rows]))
    assert metric.compute().item() == pytest.approx(classwise_ece(probabilities, labels), abs=1e-5)
    assert brier.compute().item() == pytest.approx(brier_score(probabilities, labels), abs=1e-5)
    # by hand: two classes, one bin each way: class 0 forecast 0.9 for 2 examples of which 1 is class 0
    by_hand = classwise_ece(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1]), bins=10)
    assert by_hand == pytest.approx((abs(1 - 1.8) / 2 + abs(1 - 0.2) / 2) / 2)
