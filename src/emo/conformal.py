"""Prediction sets with a coverage guarantee: split conformal prediction on held-out examples.

A score says how unusual a class is for an example, from its class probabilities: `lac` (least ambiguous set-valued
classifier: 1 - p(class)), `aps` (adaptive: the probability of the classes at least as likely, this one included) or
`raps` (aps plus `raps_lambda` for each class ranked beyond the first `raps_k`: shorter sets). `fit_sets` takes the
scores of the true classes of n held-out examples (never the test split) and keeps the ceil((n + 1)(1 - alpha))-th
smallest as the threshold; the set of a new example is every class whose score is at most the threshold. If the
held-out examples and the new one are exchangeable, the set holds the true class with probability at least 1 - alpha,
whatever the model (Vovk et al.; Angelopoulos and Bates, "A gentle introduction to conformal prediction"). With
`class_conditional`, each class gets the threshold of its own examples (Mondrian conformal prediction): the guarantee
then holds for every class, not only on average.

The record `fit_sets` returns is plain JSON: it travels in a model's config and an export's settings. This file
imports numpy only: an ONNX export logs it beside its served code (`emo.export.served`).
"""

import math

import numpy as np

SCORES = ("lac", "aps", "raps")


def class_scores(probabilities, score: str = "lac", raps_lambda: float = 0.01, raps_k: int = 1) -> np.ndarray:
    """The score of every class of every example (rows: examples; lower: more plausible)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if score == "lac":
        return 1.0 - probabilities
    if score not in SCORES:
        raise ValueError(f"score {score!r}: one of {', '.join(SCORES)}")
    order = np.argsort(-probabilities, axis=1, kind="stable")  # most probable first
    ranked = np.take_along_axis(probabilities, order, axis=1)
    cumulative = np.cumsum(ranked, axis=1)  # the mass of the classes at least as probable, each one included
    if score == "raps":
        cumulative = cumulative + raps_lambda * np.maximum(0, np.arange(1, ranked.shape[1] + 1) - raps_k)
    scores = np.empty_like(cumulative)
    np.put_along_axis(scores, order, cumulative, axis=1)
    return scores


def fewest_examples(alpha: float) -> int:
    """The fewest held-out examples (of a class, for class-conditional sets) whose threshold exists at `alpha`:
    ceil((n + 1)(1 - alpha)) <= n, that is n >= 1 / alpha - 1."""
    return math.ceil(1 / alpha - 1 - 1e-9)


def threshold(true_scores: np.ndarray, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest of n scores: the split conformal threshold."""
    n = len(true_scores)
    rank = math.ceil((n + 1) * (1 - alpha))
    if rank > n:
        raise ValueError(f"{n} held-out examples are too few for alpha {alpha:g} (at least {fewest_examples(alpha)})")
    return float(np.sort(true_scores)[rank - 1])


def fit_sets(
    probabilities,
    labels,
    alpha: float,
    score: str = "lac",
    class_conditional: bool = False,
    raps_lambda: float = 0.01,
    raps_k: int = 1,
) -> dict:
    """The thresholds of prediction sets at miscoverage `alpha`, fitted on held-out examples' probabilities and true
    classes: one per class (the same for every class unless `class_conditional`)."""
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    true = class_scores(probabilities, score, raps_lambda, raps_k)[np.arange(len(labels)), labels]
    classes = probabilities.shape[1]
    if class_conditional:
        missing = [c for c in range(classes) if not (labels == c).any()]
        if missing:
            raise ValueError(f"class(es) {missing} have no held-out example: no class-conditional threshold")
        thresholds = [threshold(true[labels == c], alpha) for c in range(classes)]
    else:
        thresholds = [threshold(true, alpha)] * classes
    return {
        "alpha": alpha,
        "score": score,
        "class_conditional": class_conditional,
        "raps_lambda": raps_lambda,
        "raps_k": raps_k,
        "thresholds": thresholds,
    }


def membership(probabilities, record: dict) -> np.ndarray:
    """Which classes are in each example's set (rows: examples, columns: classes; booleans)."""
    scores = class_scores(probabilities, record["score"], record["raps_lambda"], record["raps_k"])
    return scores <= np.asarray(record["thresholds"])[None, :] + 1e-12  # a threshold is one of the scores: no rounding


def prediction_sets(probabilities, record: dict) -> list[list[int]]:
    """Each example's set: its classes, most probable first (an empty set says no class is plausible enough)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    inside = membership(probabilities, record)
    order = np.argsort(-probabilities, axis=1, kind="stable")
    return [[int(c) for c in row if member[c]] for row, member in zip(order, inside, strict=True)]
