"""`TemperatureScaling`: after a fit, the kept model's probabilities calibrated on validation, and the record of it.

When the test after a fit starts, a temperature T is fitted on the kept checkpoint's validation
predictions (never test) by the negative log-likelihood (`emo.calibration.fit_temperature`) and
folded into the classifier head: the test, the logged predictions and the registered model (so
`emo predict` and `mlflow models serve` of it) give softmax(z / T), the predicted labels unchanged.
The run records T (`calibration/temperature`, tag `emo.temperature`), the ECE (with a bootstrap
interval) and NLL before and after on validation and test, and the test's reliability diagram.
"""

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
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
from emo.tracking.logger import journal_logger
from emo.tracking.predictions import EvaluationPredictions


class TemperatureScaling(Callback):
    """Calibrates the fitted model before its test (and so before it is logged and registered).

    Args:
        temperature_scaling: Fit a temperature on validation and fold it into the model; false keeps the raw logits.
    """

    def __init__(self, temperature_scaling: bool = True):
        self.temperature_scaling = temperature_scaling
        self.predictions: EvaluationPredictions | None = None  # the run's, found among the trainer's callbacks
        self.temperature: float | None = None

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.temperature = None
        found = [callback for callback in trainer.callbacks if isinstance(callback, EvaluationPredictions)]
        self.predictions = found[0] if found else None
        validation = self.predictions.predictions.get("val") if self.predictions else None
        if not self.temperature_scaling or validation is None:  # a test without a fit before it: the model as given
            return
        probabilities, labels = validation["probabilities"].double().numpy(), validation["label"].numpy()
        self.temperature = fit_temperature(log_probabilities(probabilities), labels)
        scale_classifier_head(pl_module.model, self.temperature)
        after = scaled_probabilities(log_probabilities(probabilities), self.temperature)
        self.record(
            trainer, {**self.scores("val_before", probabilities, labels), **self.scores("val_after", after, labels)}
        )

    @staticmethod
    def scores(prefix: str, probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return {
            f"calibration/{prefix}_{key}": value for key, value in calibration_scores(probabilities, labels).items()
        }

    @rank_zero_only
    def record(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        logger = journal_logger(trainer)
        if logger is not None:
            logger.log_metrics(metrics, step=trainer.global_step)

    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = journal_logger(trainer)
        test = self.predictions.predictions.get("test") if self.predictions else None
        if logger is None or test is None:
            return
        after, labels = test["probabilities"].double().numpy(), test["label"].numpy()
        metrics = self.scores("test_after" if self.temperature else "test", after, labels)
        if self.temperature:  # the test ran calibrated: its raw probabilities are softmax(T log p)
            before = scaled_probabilities(log_probabilities(after), 1 / self.temperature)
            metrics |= self.scores("test_before", before, labels) | {"calibration/temperature": self.temperature}
            logger.record_tags({TEMPERATURE_TAG: f"{self.temperature:.6g}"})
        logger.log_metrics(metrics, step=trainer.global_step)
        title = f"test, temperature {self.temperature:.3g}" if self.temperature else "test, no temperature scaling"
        logger.record_figure(reliability_figure(after, labels, title=title), RELIABILITY_ARTIFACT)
