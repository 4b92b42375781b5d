"""The kept model's probabilities calibrated on validation before its test, and the record of it.

A temperature T is fitted on the kept checkpoint's validation predictions (never test) by the negative
log-likelihood (`emo.calibration.fit_temperature`) and folded into the classifier head: the test, the logged
predictions and the registered model (so `emo predict` and `mlflow models serve` of it) give softmax(z / T), the
predicted labels unchanged. The run records T (`calibration/temperature`, tag `emo.temperature`), the ECE (with a
bootstrap interval) and NLL before and after on validation and test, and the test's reliability diagram.
"""

import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from emo.calibration import (
    calibration_scores,
    fit_temperature,
    log_probabilities,
    reliability_figure,
    scale_classifier_head,
    scaled_probabilities,
)
from emo.spec import RELIABILITY_ARTIFACT, TEMPERATURE_TAG


class Calibration:
    """The `calibration:` section: how the kept model's probabilities are calibrated before its test.

    Args:
        temperature_scaling: Fit a temperature on the kept checkpoint's validation predictions and fold it into the
            model; false keeps the raw logits.
    """

    def __init__(self, temperature_scaling: bool = True):
        self.temperature_scaling = temperature_scaling


def scores(prefix: str, probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`calibration/<prefix>_<score>` of one split's probabilities (`emo.calibration.calibration_scores`)."""
    return {f"calibration/{prefix}_{key}": value for key, value in calibration_scores(probabilities, labels).items()}


def calibrate(model, validation: dict, settings: Calibration, logger, step: int) -> float | None:
    """Fits T on `validation` (the kept checkpoint's predictions: `label`, `probabilities`), folds it into `model`'s
    head and records the validation's scores before and after; returns T (None: not asked for)."""
    if not settings.temperature_scaling:
        return None
    probabilities, labels = validation["probabilities"].double().numpy(), validation["label"].numpy()
    temperature = fit_temperature(log_probabilities(probabilities), labels)
    scale_classifier_head(model.model, temperature)
    after = scaled_probabilities(log_probabilities(probabilities), temperature)
    record_metrics(logger, scores("val_before", probabilities, labels) | scores("val_after", after, labels), step)
    return temperature


@rank_zero_only
def record_metrics(logger, metrics: dict[str, float], step: int) -> None:
    if logger is not None:
        logger.log_metrics(metrics, step=step)


@rank_zero_only
def record_test_calibration(logger, test: dict, temperature: float | None, step: int) -> None:
    """The test's scores (after T, and before it: softmax(T log p) of the calibrated probabilities), T itself and the
    test's reliability diagram."""
    if logger is None:
        return
    after, labels = test["probabilities"].double().numpy(), test["label"].numpy()
    metrics = scores("test_after" if temperature else "test", after, labels)
    if temperature:
        before = scaled_probabilities(log_probabilities(after), 1 / temperature)
        metrics |= scores("test_before", before, labels) | {"calibration/temperature": temperature}
        logger.record_tags({TEMPERATURE_TAG: f"{temperature:.6g}"})
    logger.log_metrics(metrics, step=step)
    title = f"test, temperature {temperature:.3g}" if temperature else "test, no temperature scaling"
    logger.record_figure(reliability_figure(after, labels, title=title), RELIABILITY_ARTIFACT)
