"""Which run is best, and when a new model becomes champion: one rule each, on validation only.

- **Direction**: larger is better for a score, smaller for a loss or an error (`emo.spec.is_maximized`).
- **The best run** (`best_index`): of runs' validation values at their kept checkpoints, the best in the metric's
  direction; of equals, the first (the oldest run, as Optuna's `best_trial`). A sweep marks, reports first and
  registers it; `emo report` names it.
- **The champion** (`challenge`): a challenger becomes champion when it beats the champion on the validation metric
  at each one's kept checkpoint. When both were validated on the same examples (the same digest of the validation
  split) and both logged those predictions, only when the 95 % paired bootstrap interval of the improvement lies
  above zero (`emo.analysis.paired_bootstrap`, as `emo report --compare`): a difference the validation split cannot
  tell from chance moves nothing. Test is reported, never compared.
"""

import dataclasses
from collections.abc import Sequence

import pandas as pd

from emo.analysis import frame_label_names, is_bootstrapped, paired_bootstrap
from emo.spec import is_maximized

DRAWS = 10_000  # of the paired bootstrap


def improvement(value: float, other: float, metric: str) -> float:
    """How much better `value` is than `other` in `metric`'s direction (negative: worse)."""
    return value - other if is_maximized(metric) else other - value


def best_index(values: Sequence[float | None], metric: str) -> int | None:
    """The position of the best value (None: a run without it, never best); the first of equals. None if none has one."""
    best = None
    for i, value in enumerate(values):
        if value is not None and value == value and (best is None or improvement(value, values[best], metric) > 0):
            best = i
    return best


@dataclasses.dataclass(frozen=True)
class Evidence:
    """A model's validation at its kept checkpoint: the metric's value, the digest of the validation split it was
    validated on, and its logged predictions there (`val/predictions.csv`), where known."""

    value: float | None
    digest: str | None = None
    predictions: pd.DataFrame | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether the challenger becomes champion, and why, with the figures (for the registered version's description)."""

    promoted: bool
    reason: str


def challenge(
    metric: str, challenger: Evidence, champion: Evidence | None, champion_name: str = "the champion"
) -> Decision:
    """The champion rule (see the module): does `challenger` take `champion`'s place on `metric` (`val/...`)?"""
    if challenger.value is None:
        return Decision(False, f"Not champion: no {metric} at its kept checkpoint to compare.")
    if champion is None or champion.value is None:
        why = "no champion before it" if champion is None else f"{champion_name} has no {metric}"
        return Decision(True, f"Champion: {why} ({metric} {challenger.value:.4f}).")
    figures = f"{metric} {challenger.value:.4f} against {champion_name}'s {champion.value:.4f}"
    paired = paired_evidence(metric, challenger, champion)
    if paired is None:
        better = improvement(challenger.value, champion.value, metric) > 0
        why = "validated on other examples" if challenger.digest != champion.digest else "no paired predictions"
        verdict = "Champion" if better else "Not champion"
        return Decision(better, f"{verdict}: {figures}, compared as point estimates ({why}).")
    # The interval of challenger minus champion, turned into one of the improvement (for a loss: champion minus challenger).
    low, high = (paired["low"], paired["high"]) if is_maximized(metric) else (-paired["high"], -paired["low"])
    gain = improvement(challenger.value, champion.value, metric)
    interval = (
        f"improvement {gain:+.4f}, 95 % paired bootstrap interval [{low:+.4f}, {high:+.4f}] over the same "
        f"{len(challenger.predictions)} validation examples"
    )
    if low > 0:
        return Decision(True, f"Champion: {figures}; {interval}, above zero.")
    return Decision(False, f"Not champion: {figures}; {interval}, not above zero: the split cannot tell them apart.")


def paired_evidence(metric: str, challenger: Evidence, champion: Evidence) -> dict | None:
    """The paired bootstrap of `metric` between the two, challenger minus champion; None where it cannot be paired:
    other validation examples, predictions not logged, other classes, a metric not computed from predictions."""
    if challenger.digest is None or challenger.digest != champion.digest:
        return None
    if challenger.predictions is None or champion.predictions is None:
        return None
    labels = frame_label_names(challenger.predictions)
    key = metric.removeprefix("val/")
    if frame_label_names(champion.predictions) != labels or not is_bootstrapped(key, labels):
        return None
    try:
        result = paired_bootstrap([challenger.predictions], [champion.predictions], labels, DRAWS, metrics=[key])
    except ValueError:  # the frames hold other examples after all
        return None
    return result[key]
