"""What the features of a data set say beside its labels: near-duplicates, outliers and class imbalance, found by
cleanlab's `Datalab` (`training_issues`), and texts of another split near a training text (`split_pairs`).

Pure: features (and labels, probabilities) in, tables out. The features are a model's pooled encoder outputs; an
example's near-duplicates are the examples closer to it than `threshold` times the median distance of an example to
its nearest neighbour (cleanlab's rule, its default 0.13), distances as Datalab measures them (cosine).
"""

import contextlib
import dataclasses
import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from cleanlab import Datalab

NEAR_DUPLICATE_THRESHOLD = 0.13  # cleanlab's default radius, as a share of the median nearest-neighbour distance


class DatalabFailed(Exception):
    """A check of Datalab's that could not run, and why (one line)."""


def datalab(
    features: np.ndarray,
    checks: Mapping[str, dict],
    labels: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
) -> Datalab:
    """Datalab's `checks` (`{issue type: its settings}`) on these examples, every one of them run: Datalab reports a
    check that fails on stdout and goes on, so a check missing from its summary raises `DatalabFailed` with Datalab's
    reason."""
    data = {"label": np.asarray(labels)} if labels is not None else {"example": np.arange(len(features))}
    lab = Datalab(data=data, label_name="label" if labels is not None else None, verbosity=0)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        lab.find_issues(
            features=np.asarray(features, dtype=np.float32),
            pred_probs=None if probabilities is None else np.asarray(probabilities, dtype=np.float64),
            issue_types={name: dict(settings) for name, settings in checks.items()},
        )
    try:
        ran = set(lab.get_issue_summary()["issue_type"])
    except ValueError:  # Datalab's word for "no check ran"
        ran = set()
    missing = [name for name in checks if name not in ran]
    if missing:
        reasons = [
            line.removeprefix("Error in ") for line in printed.getvalue().splitlines() if line.startswith("Error")
        ]
        raise DatalabFailed(reasons[0] if reasons else f"{', '.join(missing)}: not run (features of {features.shape})")
    return lab


def near_duplicate_pairs(lab: Datalab) -> pd.DataFrame:
    """Datalab's near-duplicate sets as pairs of rows `a` < `b` with their `distance`, nearest first."""
    sets = lab.get_info("near_duplicate")["near_duplicate_sets"]
    graph = lab.get_info("statistics")["weighted_knn_graph"]  # each row's nearest neighbours and their distances
    pairs = sorted({(min(a, int(b)), max(a, int(b))) for a, members in enumerate(sets) for b in members})
    distances = [max(graph[a, b], graph[b, a]) for a, b in pairs]  # a pair is in the graph one way at least
    frame = pd.DataFrame(pairs or np.empty((0, 2), dtype=int), columns=["a", "b"])
    frame["distance"] = np.round(np.asarray(distances, dtype=np.float64), 6)
    return frame.sort_values(["distance", "a", "b"], kind="stable").reset_index(drop=True)


@dataclasses.dataclass(frozen=True)
class TrainingIssues:
    """What Datalab finds in a training split: `near_duplicates`, pairs of texts (`index_a`, `index_b`, `text_a`,
    `text_b`, `label_a`, `label_b`, `distance`), nearest first; `near_duplicate_examples`, the texts in such a pair;
    `outliers` (`index`, `text`, `label`, `score`: cleanlab's outlier score, lower is more unusual), most unusual first;
    `class_imbalance`, the examples of a class rarer than a tenth of an even share (cleanlab's rule; 0: none)."""

    near_duplicates: pd.DataFrame
    near_duplicate_examples: int
    outliers: pd.DataFrame
    class_imbalance: int


def training_issues(
    texts: Sequence[str],
    given: np.ndarray,
    features: np.ndarray,
    probabilities: np.ndarray,
    label_names: Sequence[str],
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
) -> TrainingIssues:
    """Near-duplicates, outliers and class imbalance among a split's examples: row i is the example at `index` i."""
    lab = datalab(
        features,
        {"near_duplicate": {"threshold": threshold}, "outlier": {}, "class_imbalance": {}},
        labels=given,
        probabilities=probabilities,
    )
    names, given = np.asarray(label_names), np.asarray(given)
    pairs = near_duplicate_pairs(lab)
    near = pd.DataFrame(
        {
            "index_a": pairs["a"],
            "index_b": pairs["b"],
            "text_a": [texts[i] for i in pairs["a"]],
            "text_b": [texts[i] for i in pairs["b"]],
            "label_a": names[given[pairs["a"]]],
            "label_b": names[given[pairs["b"]]],
            "distance": pairs["distance"],
        }
    )
    scored = lab.get_issues("outlier")
    flagged = scored.index[scored["is_outlier_issue"]].to_numpy()
    flagged = flagged[np.argsort(scored["outlier_score"].to_numpy()[flagged], kind="stable")]
    outliers = pd.DataFrame(
        {
            "index": flagged,
            "text": [texts[i] for i in flagged],
            "label": names[given[flagged]],
            "score": scored["outlier_score"].to_numpy()[flagged].round(6),
        }
    )
    return TrainingIssues(
        near_duplicates=near,
        near_duplicate_examples=int(lab.get_issues("near_duplicate")["is_near_duplicate_issue"].sum()),
        outliers=outliers,
        class_imbalance=int(lab.get_issues("class_imbalance")["is_class_imbalance_issue"].sum()),
    )


def split_pairs(
    train: tuple[np.ndarray, np.ndarray],
    others: Mapping[str, tuple[np.ndarray, np.ndarray]],
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
) -> pd.DataFrame:
    """The near-duplicate pairs that join a training example with one of another split, from one Datalab over all of
    them in one embedding space: `train` and each of `others` (`{split: (examples, features)}`) as `(examples,
    features)`. Columns `split`, `example` (its place in that split), `index` (the training example's), `distance`."""
    parts = [("train", *train), *((split, *pair) for split, pair in others.items())]
    splits = np.concatenate([[split] * len(examples) for split, examples, _ in parts])
    examples = np.concatenate([np.asarray(examples) for _, examples, _ in parts])
    lab = datalab(np.concatenate([features for _, _, features in parts]), {"near_duplicate": {"threshold": threshold}})
    pairs = near_duplicate_pairs(lab)
    across = (splits[pairs["a"]] == "train") != (splits[pairs["b"]] == "train")
    pairs = pairs[across]
    train_row = np.where(splits[pairs["a"]] == "train", pairs["a"], pairs["b"])
    other_row = np.where(splits[pairs["a"]] == "train", pairs["b"], pairs["a"])
    return pd.DataFrame(
        {
            "split": splits[other_row],
            "example": examples[other_row],
            "index": examples[train_row],
            "distance": pairs["distance"].to_numpy(),
        }
    )
