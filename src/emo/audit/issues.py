"""Which training labels are likely wrong, from out-of-fold probabilities: confident learning (`cleanlab`).

Pure: given labels and probabilities in, tables out. Each example's probabilities come from a model
that never saw it (`emo audit`'s folds), which is what confident learning needs.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
from cleanlab.count import compute_confident_joint
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from matplotlib.figure import Figure  # drawn into files: no pyplot, no backend, nothing to close


def label_issues(
    texts: Sequence[str],
    given: np.ndarray,
    probabilities: np.ndarray,
    label_names: Sequence[str],
) -> pd.DataFrame:
    """The flagged examples, most likely wrong first: `index` (place in the split), `text`, `given`, `suggested` (the
    most probable class), `score` (cleanlab's label quality, self-confidence: lower is more likely wrong)."""
    given, probabilities = np.asarray(given), np.asarray(probabilities, dtype=np.float64)
    ranked = find_label_issues(given, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
    scores = get_label_quality_scores(given, probabilities, method="self_confidence")
    names = np.asarray(label_names)
    return pd.DataFrame(
        {
            "index": ranked,
            "text": [texts[i] for i in ranked],
            "given": names[given[ranked]],
            "suggested": names[probabilities[ranked].argmax(axis=1)],
            "score": scores[ranked].round(6),
        }
    )


def noise_matrix(given: np.ndarray, probabilities: np.ndarray, label_names: Sequence[str]) -> pd.DataFrame:
    """cleanlab's confident joint: estimated counts of examples given each label (rows) whose class is another
    (columns); off the diagonal, the label noise."""
    joint = compute_confident_joint(np.asarray(given), np.asarray(probabilities, dtype=np.float64))
    return pd.DataFrame(joint, index=pd.Index(label_names, name="given"), columns=list(label_names))


def noise_figure(matrix: pd.DataFrame):
    """The noise matrix as a heat map of counts, given by row, suggested by column."""
    figure = Figure(figsize=(7, 6))
    ax = figure.subplots()
    values = matrix.to_numpy()
    ax.imshow(np.log1p(values), cmap="Blues")
    ticks = range(len(matrix))
    ax.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=matrix.columns,
        yticklabels=matrix.index,
        xlabel="suggested (class)",
        ylabel="given (label)",
        title="Estimated label noise: counts (confident joint)",
    )
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    for (row, column), count in np.ndenumerate(values):
        ax.text(column, row, str(int(count)), ha="center", va="center", color="black" if row != column else "white")
    figure.tight_layout()
    return figure
