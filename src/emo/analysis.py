"""Error analysis of a test: the predictions table, the most confident mistakes, the figures, and
the paired bootstrap that says whether one run (or group of seeds) beats another, on validation
(to choose) or on test (to report)."""

from collections.abc import Sequence

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # drawn into files: no pyplot, no backend, nothing to close

from emo.bootstrap import bootstrap_weights, percentile_interval  # noqa: E402
from emo.spec import is_maximized  # noqa: E402


def predictions_frame(
    texts: Sequence[str], labels, probabilities, label_names: Sequence[str], examples
) -> pd.DataFrame:
    """One row per example, in the split's own order: text, true and predicted label, confidence, probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    names = np.asarray(label_names)
    predicted = probabilities.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "example": np.asarray(examples),
            "text": list(texts),
            "label": names[np.asarray(labels)],
            "predicted": names[predicted],
            "confidence": probabilities.max(axis=1).round(5),
        }
    )
    for i, name in enumerate(label_names):
        frame[f"p_{name}"] = probabilities[:, i].round(5)
    return frame


def frame_label_names(predictions: pd.DataFrame) -> list[str]:
    """The class names of a predictions table, in id order: its `p_<label>` columns."""
    return [column.removeprefix("p_") for column in predictions.columns if column.startswith("p_")]


def confident_mistakes(predictions: pd.DataFrame, n: int = 30) -> pd.DataFrame:
    """The wrong predictions the model was surest of: label noise, or what the model has not learnt."""
    wrong = predictions[predictions["label"] != predictions["predicted"]]
    return wrong.sort_values("confidence", ascending=False).head(n)[
        ["example", "text", "label", "predicted", "confidence"]
    ]


def mistakes_markdown(mistakes: pd.DataFrame) -> str:
    lines = ["| line | text | true | predicted | probability |", "|---|---|---|---|---|"]
    for row in mistakes.itertuples(index=False):
        text = str(row.text).replace("|", "\\|")
        lines.append(f"| {row.example + 1} | {text} | {row.label} | {row.predicted} | {row.confidence:.3f} |")
    return "\n".join(lines) + "\n"


def normalised_confusion_figure(confusion, label_names: Sequence[str]):
    """Rows are the true classes, each summing to 1: the recall of a class on the diagonal, where its misses go beside it."""
    counts = np.asarray(confusion, dtype=np.float64)
    shares = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    figure = Figure(figsize=(7, 6))
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), share in np.ndenumerate(shares):
        ax.text(j, i, f"{share:.2f}", ha="center", va="center", color="white" if share > 0.6 else "black", fontsize=9)
    ticks = range(len(label_names))
    ax.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=label_names,
        yticklabels=label_names,
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix, normalised by true class",
    )
    figure.colorbar(image, ax=ax, fraction=0.046)
    figure.tight_layout()
    return figure


def per_class_f1_figure(report: dict):
    """F1 per class as bars, with each class's test support: the rare classes are where the errors weigh most."""
    labels = list(report)
    f1 = [report[label]["f1"] for label in labels]
    figure = Figure(figsize=(7, 4))
    ax = figure.subplots()
    bars = ax.bar(labels, f1, color="tab:blue")
    for bar, label in zip(bars, labels, strict=True):
        ax.annotate(
            f"{report[label]['f1']:.3f}\nn={report[label]['support']}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set(ylim=(0, 1.12), ylabel="F1", title="test F1 per class")
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def confusion_counts(truth: np.ndarray, predicted: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices, one per row of `weights` (how often each example is drawn): shape (draws, k, k)."""
    cells = np.eye(k * k)[truth * k + predicted]  # (examples, k*k) one-hot
    return (weights @ cells).reshape(len(weights), k, k)


def confusion_matrix(truth, predicted, k: int) -> np.ndarray:
    """Counts, true class by row, predicted class by column."""
    return confusion_counts(np.asarray(truth), np.asarray(predicted), np.ones((1, len(truth))), k)[0]


PER_CLASS_KEYS = ("f1", "precision", "recall")  # `<key>_<label>`: one class's score


def confusion_metric(confusion: np.ndarray, key: str, label_names: Sequence[str]) -> np.ndarray:
    """A metric of `emo.spec.METRICS` from confusion matrices (..., k, k), as torchmetrics computes it: `acc`,
    `f1_macro` (the mean over classes present in truth or predictions), `f1_weighted` (weighted by each class's true
    examples), or one class's `f1_<label>`, `precision_<label>`, `recall_<label>`. Scikit-learn's `accuracy_score`,
    `f1_score`, `precision_score`, `recall_score` agree (tests/test_analysis.py)."""
    diagonal = np.diagonal(confusion, axis1=-2, axis2=-1)
    true, predicted = confusion.sum(axis=-1), confusion.sum(axis=-2)
    if key == "acc":
        return diagonal.sum(axis=-1) / confusion.sum(axis=(-2, -1))
    f1 = np.divide(2 * diagonal, true + predicted, out=np.zeros_like(diagonal), where=(true + predicted) > 0)
    if key == "f1_macro":
        present = (true + predicted) > 0
        return (f1 * present).sum(axis=-1) / present.sum(axis=-1)
    if key == "f1_weighted":
        return (f1 * true).sum(axis=-1) / true.sum(axis=-1)
    per_class = {
        "f1": f1,
        "precision": np.divide(diagonal, predicted, out=np.zeros_like(diagonal), where=predicted > 0),
        "recall": np.divide(diagonal, true, out=np.zeros_like(diagonal), where=true > 0),
    }
    name, _, label = key.partition("_")
    if name in per_class and label in label_names:
        return per_class[name][..., list(label_names).index(label)]
    raise ValueError(f"{key}: not a metric of a confusion matrix (acc, f1_macro, f1_weighted, f1_<label>, ...)")


def is_bootstrapped(key: str, label_names: Sequence[str]) -> bool:
    """Whether `paired_bootstrap` computes metric `key` (its name without the split) from logged predictions."""
    name, _, label = key.partition("_")
    return key in ("acc", "f1_macro", "f1_weighted", "loss") or (name in PER_CLASS_KEYS and label in label_names)


def paired_bootstrap(
    group_a: list[pd.DataFrame],
    group_b: list[pd.DataFrame],
    label_names: Sequence[str],
    draws: int = 10_000,
    seed: int = 0,
    metrics: Sequence[str] = ("acc", "f1_macro"),
) -> dict[str, dict[str, float]]:
    """A minus B in each of `metrics` (see `is_bootstrapped`; `loss` is the mean negative log-likelihood of the true
    class), with a 95 % interval from resampling the examples (of one split).

    Each group is one run or several (seeds): a group's score is the mean of its runs' scores on
    the same resampled examples, so the interval covers the split's sampling, paired.
    """
    frames = [*group_a, *group_b]
    reference = frames[0][["example", "text", "label"]].sort_values("example").reset_index(drop=True)
    index = {name: i for i, name in enumerate(label_names)}
    aligned = []
    for frame in frames:
        frame = frame.sort_values("example").reset_index(drop=True)
        if not frame[["example", "text", "label"]].equals(reference):
            raise ValueError("the runs were evaluated on different examples: a paired comparison needs the same split")
        aligned.append(frame)
    truth = reference["label"].map(index).to_numpy()
    n, k = len(truth), len(label_names)
    weights = bootstrap_weights(n, draws, seed)
    scores = []  # per frame: {metric: value per draw}
    for frame in aligned:
        confusion = confusion_counts(truth, frame["predicted"].map(index).to_numpy(), weights, k)
        true_probability = frame[[f"p_{name}" for name in label_names]].to_numpy()[np.arange(n), truth]
        loss = -np.log(np.clip(true_probability, 1e-12, None))
        scores.append(
            {m: (weights @ loss) / n if m == "loss" else confusion_metric(confusion, m, label_names) for m in metrics}
        )
    result = {}
    for metric in metrics:
        a = np.mean([score[metric] for score in scores[: len(group_a)]], axis=0)
        b = np.mean([score[metric] for score in scores[len(group_a) :]], axis=0)
        difference = a - b
        low, high = percentile_interval(difference)
        result[metric] = {
            "a": float(a[0]),
            "b": float(b[0]),
            "difference": float(difference[0]),
            "low": float(low),
            "high": float(high),
            "p_b_better": float((difference[1:] < 0 if is_maximized(metric) else difference[1:] > 0).mean()),
        }
    return result
