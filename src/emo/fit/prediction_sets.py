"""Prediction sets with a coverage guarantee, after the temperature: thresholds fitted on the kept checkpoint's
calibrated validation predictions (never test; `emo.conformal`), and the record of them.

The thresholds go into the model's config (`prediction_sets`, with the temperature's `calibration_temperature`): the
registered version, its export and `emo predict` of either give each text its set. On test, the run records the
coverage (overall and per class), the mean set size and the shares of sets of size 0, 1 and 2 or more, each with a 95 %
bootstrap interval (`conformal/test_*`), and the thresholds as the tag `emo.prediction_sets`.
"""

import json
from collections.abc import Sequence
from typing import Literal

import numpy as np
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, OpenUnitInterval
from lightning.pytorch.utilities import rank_zero_only

from emo import UserError
from emo.bootstrap import bootstrap_weights, percentile_interval
from emo.calibration import log_probabilities, scaled_probabilities
from emo.conformal import fit_sets, membership
from emo.spec import PREDICTION_SETS_TAG


class Conformal:
    """The `conformal:` section: prediction sets that hold the true class with probability at least 1 - alpha.

    Args:
        alpha: The miscoverage allowed; `null`: no prediction sets.
        score: `lac` (1 - the class's probability: the smallest sets), `aps` (the probability of the classes at
            least as likely: sets that grow where the model is unsure), or `raps` (aps, shorter).
        class_conditional: A threshold per class (Mondrian): the coverage holds for every class, not only on average.
            Each class needs at least 1 / alpha - 1 validation examples.
        raps_lambda: With `raps`, the score added for each class ranked beyond the first `raps_k`.
        raps_k: With `raps`, how many of the most probable classes are free of that penalty.
    """

    def __init__(
        self,
        alpha: OpenUnitInterval | None = 0.1,
        score: Literal["lac", "aps", "raps"] = "lac",
        class_conditional: bool = False,
        raps_lambda: NonNegativeFloat = 0.01,
        raps_k: NonNegativeInt = 1,
    ):
        self.alpha = alpha
        self.score = score
        self.class_conditional = class_conditional
        self.raps_lambda = raps_lambda
        self.raps_k = raps_k


def fit_prediction_sets(model, validation: dict, temperature: float | None, settings: Conformal) -> dict | None:
    """Fits the sets' thresholds on the kept checkpoint's validation predictions as the calibrated model gives them
    (through the temperature), and puts them into the model's config; returns them (None: not asked for)."""
    if settings.alpha is None:
        return None
    probabilities = validation["probabilities"].double().numpy()
    if temperature:
        probabilities = scaled_probabilities(log_probabilities(probabilities), temperature)
    try:
        record = fit_sets(
            probabilities,
            validation["label"].numpy(),
            settings.alpha,
            settings.score,
            settings.class_conditional,
            settings.raps_lambda,
            settings.raps_k,
        )
    except ValueError as error:  # too few validation examples (of a class): data that the checks could not read
        raise UserError(f"--conformal.alpha {settings.alpha:g}: {error}") from None
    model.model.config.prediction_sets = record
    return record


def set_scores(inside: np.ndarray, labels: np.ndarray, label_names: Sequence[str], draws: int = 2000) -> dict:
    """Coverage (overall and per class), mean set size and the shares of sizes 0, 1 and 2+, of sets (`inside`: which
    classes each example's set holds) on labelled examples; each with `_low` and `_high`, its bootstrap interval."""
    covered = inside[np.arange(len(labels)), labels].astype(np.float64)
    sizes = inside.sum(axis=1)
    weights = bootstrap_weights(len(labels), draws)
    totals = weights.sum(axis=1)
    means = {
        "coverage": covered,
        "set_size": sizes.astype(np.float64),
        "size_0_share": (sizes == 0).astype(np.float64),
        "size_1_share": (sizes == 1).astype(np.float64),
        "size_2plus_share": (sizes >= 2).astype(np.float64),
    }
    statistics = {name: weights @ values / totals for name, values in means.items()}
    for i, name in enumerate(label_names):
        of_class = (labels == i).astype(np.float64)
        statistics[f"coverage_{name}"] = (weights @ (covered * of_class)) / np.maximum(weights @ of_class, 1)
    scores = {}
    for name, values in statistics.items():
        low, high = percentile_interval(values)
        scores |= {name: float(values[0]), f"{name}_low": low, f"{name}_high": high}
    return scores


@rank_zero_only
def record_test_sets(logger, test: dict, record: dict | None, label_names: Sequence[str], step: int) -> None:
    """The sets' figures on test (`conformal/test_*`) and their thresholds (tag `emo.prediction_sets`)."""
    if logger is None or record is None:
        return
    labels = test["label"].numpy()
    inside = membership(test["probabilities"].double().numpy(), record)
    scores = set_scores(inside, labels, label_names)
    logger.log_metrics({f"conformal/test_{name}": value for name, value in scores.items()}, step=step)
    logger.record_tags({PREDICTION_SETS_TAG: json.dumps(record)})
