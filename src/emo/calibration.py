"""Calibration: how far a classifier's confidence is from its accuracy, and temperature scaling to close the gap.

The expected calibration error (ECE) is torchmetrics' `MulticlassCalibrationError(norm="l1")` in numpy, with a
bootstrap interval over the examples (as `emo.analysis.paired_bootstrap`), so that `emo report` can compute it from
logged predictions without torch. A temperature T is fitted after training on the kept checkpoint's validation
predictions (never test) by minimising the negative log-likelihood of softmax(z / T); `scale_classifier_head` folds
1/T into the model's last linear layer, so the saved model's logits are z / T and every consumer of the model
returns calibrated probabilities. Dividing the logits by T > 0 never changes the predicted label.

Where one temperature is not enough, `fit_top_label_map` fits a monotone map of the top probability (isotonic
regression). No such map folds into weights (of the maps of logits that keep every argmax, a linear layer can
only hold a temperature), so `emo export` fits it on validation and its served model applies it after the softmax.
"""

import math

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # drawn into files: no pyplot, no backend, nothing to close

from emo.bootstrap import bootstrap_weights, percentile_interval  # noqa: E402

TEMPERATURE_RANGE = (0.05, 20.0)  # the temperatures fit_temperature considers
SMALLEST_PROBABILITY = 1e-300  # a probability that underflowed to 0 counts as this in a logarithm


def log_probabilities(probabilities) -> np.ndarray:
    """Natural logarithms of probabilities (fp32 softmax may underflow to 0): scores for `fit_temperature`."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), SMALLEST_PROBABILITY, None))


def softmax(scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def scaled_probabilities(scores, temperature: float) -> np.ndarray:
    """softmax(scores / T): the calibrated probabilities; `scores` are logits or log-probabilities (the same here)."""
    return softmax(np.asarray(scores, dtype=np.float64) / temperature)


def nll(probabilities, labels) -> float:
    """The mean negative log-likelihood of the true labels (the cross-entropy), in nats."""
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    return float(-log_probabilities(probabilities[np.arange(len(labels)), labels]).mean())


def fit_temperature(scores, labels, bounds: tuple[float, float] = TEMPERATURE_RANGE) -> float:
    """The temperature T that minimises the NLL of softmax(scores / T) on these examples.

    `scores` are logits or log-probabilities (`log_probabilities`): softmax ignores a constant per row. The NLL is
    convex in 1/T and its derivative there, mean(E_softmax[z] - z_label), increases with 1/T: bisection on log(1/T)
    finds the minimum to float precision, or the end of `bounds` nearer to it.
    """
    z = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if z.ndim != 2 or len(z) != len(labels) or len(z) == 0:
        raise ValueError(f"scores of shape {z.shape} and {len(labels)} labels: one row of class scores per label")
    z = z - z.max(axis=1, keepdims=True)  # the same softmax, finite where log-probabilities were clipped
    true_score = z[np.arange(len(labels)), labels]

    def slope(log_inverse_t: float) -> float:  # d NLL / d(1/T)
        p = softmax(z * math.exp(log_inverse_t))
        return float(((p * z).sum(axis=1) - true_score).mean())

    low, high = math.log(1 / bounds[1]), math.log(1 / bounds[0])
    if slope(low) >= 0:
        return bounds[1]
    if slope(high) <= 0:
        return bounds[0]
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if slope(middle) < 0 else (low, middle)
    return 1 / math.exp((low + high) / 2)


def fit_top_label_map(probabilities, labels) -> dict[str, list[float]]:
    """A monotone map of the top probability to how often the top class is right, fitted on these examples by
    isotonic regression (scikit-learn's `IsotonicRegression`): its knots, `confidence` to `calibrated`, linear
    between them and flat beyond. `emo.export.served.top_label_calibrated` applies it.

    One temperature scales every confidence alike; this map corrects each confidence by its own amount, where a
    model is too sure at some confidences and too unsure at others (docs/results.md). Fit it on a few thousand
    examples: on fewer, it learns their noise. One wrong answer at confidence 1 is added to the examples, so that
    no confidence maps to certainty: where the most confident examples were all right, the map would say 1, and a
    wrong answer there would have probability 0 (measured: test NLL 0.17 -> 0.50 without it, 0.16 with it).
    """
    from sklearn.isotonic import IsotonicRegression

    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = np.append(probabilities.max(axis=1), 1.0)
    right = np.append(probabilities.argmax(axis=1) == np.asarray(labels), False)
    regression = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(confidence, right)
    return {"confidence": regression.X_thresholds_.tolist(), "calibrated": regression.y_thresholds_.tolist()}


def calibration_bins(probabilities, labels, bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example: its bin (of `bins` equal widths on [0, 1], plus one for confidence exactly 1, as torchmetrics),
    its confidence (the top probability) and whether the top class is right."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    index = (
        np.searchsorted(np.linspace(0, 1, bins + 1), confidence, side="right") - 1
    )  # torch.bucketize(right=True) - 1
    return index, confidence, correct


def weighted_ece(
    index: np.ndarray, confidence: np.ndarray, correct: np.ndarray, weights: np.ndarray, bins: int
) -> np.ndarray:
    """ECE for each row of `weights` (how often each example is drawn): sum over bins of |right - confidence| / n."""
    one_hot = np.eye(bins + 1)[index]  # (examples, bins + 1)
    gap = weights @ (one_hot * (correct - confidence)[:, None])  # per bin: right answers minus summed confidence
    return np.abs(gap).sum(axis=1) / weights.sum(axis=1)


def expected_calibration_error(probabilities, labels, bins: int = 15) -> float:
    """Top-label ECE, L1: sum over bins of (share of examples) * |accuracy - mean confidence|;
    equal to torchmetrics' `MulticlassCalibrationError(n_bins=bins, norm="l1")`."""
    index, confidence, correct = calibration_bins(probabilities, labels, bins)
    return float(weighted_ece(index, confidence, correct, np.ones((1, len(index))), bins)[0])


def ece_bootstrap(
    probabilities, labels, bins: int = 15, draws: int = 2000, seed: int = 0, reference=None
) -> dict[str, float]:
    """The ECE with a 95 % percentile interval from resampling the examples.

    With `reference` (the same examples' probabilities before scaling, say), also the change `ece - reference_ece`
    and its interval, paired: both scored on the same resampled examples. On a few thousand examples the
    interval is about a point wide each side; the ECE of a finite sample is biased upwards (empty and thin bins).
    """
    weights = bootstrap_weights(len(labels), draws, seed)
    ece = weighted_ece(*calibration_bins(probabilities, labels, bins), weights, bins)
    low, high = percentile_interval(ece)
    result = {"ece": float(ece[0]), "low": low, "high": high}
    if reference is not None:
        change = ece - weighted_ece(*calibration_bins(reference, labels, bins), weights, bins)
        low, high = percentile_interval(change)
        result |= {"change": float(change[0]), "change_low": low, "change_high": high}
    return result


def reliability_figure(probabilities, labels, bins: int = 15, title: str = "test"):
    """Accuracy against mean confidence per confidence bin, the diagonal of perfect calibration, and the examples
    per bin below; the ECE in the title."""
    index, confidence, correct = calibration_bins(probabilities, labels, bins)
    counts = np.bincount(index, minlength=bins + 1)[:bins]
    counts[-1] += int((index == bins).sum())  # confidence exactly 1: drawn in the top bin
    index = np.minimum(index, bins - 1)
    filled = counts > 0
    accuracy = np.bincount(index, weights=correct, minlength=bins)[filled] / counts[filled]
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins)[filled] / counts[filled]
    edges = np.linspace(0, 1, bins + 1)
    figure = Figure(figsize=(6, 6.5))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(
        edges[:-1][filled],
        accuracy,
        width=1 / bins,
        align="edge",
        color="tab:blue",
        edgecolor="white",
        label="accuracy",
    )
    top.plot(mean_confidence, accuracy, "o", color="tab:orange", markersize=4, label="(mean confidence, accuracy)")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set(
        xlim=(0, 1),
        ylim=(0, 1),
        ylabel="accuracy",
        title=f"reliability, {title}: ECE {expected_calibration_error(probabilities, labels, bins):.4f} ({bins} bins)",
    )
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(edges[:-1], counts, width=1 / bins, align="edge", color="tab:grey", edgecolor="white")
    bottom.set(xlabel="confidence (top probability)", ylabel="examples", yscale="log")
    figure.tight_layout()
    return figure


CLASSIFIER_OUTPUTS = ("classifier", "classifier.out_proj")  # BERT, MiniLM, DistilBERT; RoBERTa, MPNet, DeBERTa-like


def classifier_output_layer(model) -> tuple[str, object]:
    """The linear layer that outputs the `num_labels` logits of an `AutoModelForSequenceClassification`, and its name:
    one of `CLASSIFIER_OUTPUTS`. Another head is refused (ValueError), not guessed at."""
    import torch

    num_labels = model.config.num_labels
    modules = dict(model.named_modules())
    for name in reversed(CLASSIFIER_OUTPUTS):
        layer = modules.get(name)
        if isinstance(layer, torch.nn.Linear) and layer.out_features == num_labels:
            return name, layer
    raise ValueError(
        f"emo does not know the classification head of {type(model).__name__} (its logits come from none of "
        f"{', '.join(CLASSIFIER_OUTPUTS)})"
    )


def scale_classifier_head(model, temperature: float) -> str:
    """Divides the model's logits by `temperature` for good: its output layer's weight and bias, in place.

    A saved model (the transformers flavor, `emo predict`, an ONNX export) then returns calibrated
    probabilities with no code of its own; the predicted label is unchanged. The temperature so far is kept in
    the model's config as `calibration_temperature` (written with it to config.json). Returns the layer's name.
    """
    import torch

    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature {temperature}: a positive number")
    name, layer = classifier_output_layer(model)
    with torch.no_grad():
        layer.weight.div_(temperature)
        if layer.bias is not None:
            layer.bias.div_(temperature)
    model.config.calibration_temperature = getattr(model.config, "calibration_temperature", 1.0) * temperature
    return name


def classwise_ece(probabilities, labels, bins: int = 15) -> float:
    """Class-wise ECE (Kull et al., 2019): each class's probability as a forecast of that class, binned as
    `calibration_bins` bins the top probability, its ECE; averaged over the classes. `emo.metrics`'s, in numpy."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels, edges = np.asarray(labels), np.linspace(0, 1, bins + 1)
    gaps = []
    for c in range(probabilities.shape[1]):
        index = np.searchsorted(edges, probabilities[:, c], side="right") - 1
        hits = np.bincount(index, weights=(labels == c).astype(np.float64), minlength=bins + 1)
        forecast = np.bincount(index, weights=probabilities[:, c], minlength=bins + 1)
        gaps.append(np.abs(hits - forecast).sum() / len(labels))
    return float(np.mean(gaps))


def brier_score(probabilities, labels) -> float:
    """The multiclass Brier score: mean over examples of the squared distance to the one-hot true class, summed over
    the classes (scikit-learn's `brier_score_loss`; `emo.metrics.BrierScore`)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    one_hot = np.eye(probabilities.shape[1])[np.asarray(labels)]
    return float(((probabilities - one_hot) ** 2).sum(axis=1).mean())


def calibration_scores(probabilities, labels, bins: int = 15) -> dict[str, float]:
    """`{ece, ece_low, ece_high, classwise_ece, brier, nll}` of one split's probabilities: what a run logs before and
    after the temperature (the ECE with its bootstrap interval)."""
    interval = ece_bootstrap(probabilities, labels, bins)
    return {
        "ece": interval["ece"],
        "ece_low": interval["low"],
        "ece_high": interval["high"],
        "classwise_ece": classwise_ece(probabilities, labels, bins),
        "brier": brier_score(probabilities, labels),
        "nll": nll(probabilities, labels),
    }
