"""The end of a fit as one sequence (`finish_fit`), and the end of a test that no fit came before (`finish_test`):

    the kept checkpoint, restored once           restore_kept        (read once: `CheckpointFiles`)
    its validation predictions                   kept.validation     (saved with it; else computed again)
    the temperature, fitted on those only        calibrate
    the prediction sets' thresholds, on those    fit_prediction_sets
    the test                                     trainer.test
    the report                                   record_test_calibration, record_test_sets, record_evaluation_report,
                                                 record_heldout
    the logged and registered model              log_and_register
    the kept checkpoint, with its calibration    keep_calibration

Each step takes what the steps before it returned: none looks another up among the trainer's callbacks, and no
result depends on the order of the callback list. The run stays open from the fit through its test to the
registration and ends here: FINISHED, or FAILED with the cause when a step fails.
"""

import contextlib
import dataclasses
import os
from pathlib import Path

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint

from emo.fit.checkpoint_files import CheckpointFiles
from emo.fit.heldout import record_heldout
from emo.fit.prediction_sets import Conformal, fit_prediction_sets, record_test_sets
from emo.fit.registration import Registry, log_and_register
from emo.fit.temperature import Calibration, calibrate, record_test_calibration
from emo.inference import loader_probabilities
from emo.model import CALIBRATION_KEY
from emo.spec import KEPT_STEP_TAG
from emo.tracking import (
    VAL_PREDICTIONS_KEY,
    VAL_STEP_KEY,
    EvaluationPredictions,
    TrainingClock,
    journal_logger,
    record_evaluation_report,
)


@dataclasses.dataclass(frozen=True)
class FitEnd:
    """What the end of a fit works with: the callback that kept the best checkpoint (None: the model as it ended), the
    command's checkpoint reader, the evaluations' predictions, the training clock, and the settings of its steps."""

    checkpoint: ModelCheckpoint | None
    files: CheckpointFiles
    predictions: EvaluationPredictions
    clock: TrainingClock
    calibration: Calibration
    conformal: Conformal
    registry: Registry


@dataclasses.dataclass(frozen=True)
class Kept:
    """The checkpoint a fit kept: its file, the step its validation's metrics were logged at and that validation's
    predictions (when the file holds them: emo's checkpoints do), and its score (`{monitor: value}`)."""

    path: str | None
    step: int | None
    score: dict[str, float] | None
    validation: dict[str, torch.Tensor] | None

    def summary(self) -> dict:
        return {"path": self.path, "score": self.score}


def restore_kept(trainer, model, checkpoint: ModelCheckpoint | None, files: CheckpointFiles) -> Kept:
    """Loads the kept checkpoint's weights into `model` as they were saved: with weight averaging (Lightning's
    `EMAWeightAveraging`) these are the average, which Lightning would swap back to the raw weights were the checkpoint
    loaded through `ckpt_path`. Without a kept checkpoint, the model stays as the training left it."""
    best = checkpoint.best_model_path if checkpoint else ""
    if not best:
        return Kept(None, None, None, None)
    saved = files.read(best)
    model.load_state_dict(saved["state_dict"])
    score = None if checkpoint.best_model_score is None else {checkpoint.monitor: float(checkpoint.best_model_score)}
    return Kept(best, saved.get(VAL_STEP_KEY), score, saved.get(VAL_PREDICTIONS_KEY))


def validation_predictions(trainer, model, datamodule) -> dict[str, torch.Tensor]:
    """The model's predictions on the validation split, in example order, at the trainer's precision: for a kept
    checkpoint that does not hold those of the validation that scored it."""
    predicted = loader_probabilities(
        model, datamodule.val_dataloader(), key="example", context=trainer.strategy.precision_plugin.forward_context
    )
    order = torch.argsort(predicted["example"])
    return {name: column[order] for name, column in predicted.items()}


@contextlib.contextmanager
def run_ends_here(logger):
    """The run, held open through the steps inside, ends when they do: FINISHED, or FAILED with the cause."""
    try:
        yield
    except BaseException as error:
        if logger is not None:
            logger.note_exception(error)
            logger.end("failed")
        raise
    if logger is not None:
        logger.end("success")


@rank_zero_only
def keep_calibration(kept: Kept, files: CheckpointFiles, temperature: float | None, sets: dict | None) -> None:
    """The kept checkpoint carries the calibration fitted on it (`CALIBRATION_KEY`): loaded to validate, test or
    predict it gives what the registered model gives (`EmotionClassifier.on_load_checkpoint`). Written whole or not at
    all, as Lightning writes a checkpoint (a new file renamed over the old)."""
    if kept.path is None or not (temperature or sets):
        return
    saved = dict(files.read(kept.path))
    saved[CALIBRATION_KEY] = {"temperature": temperature, "prediction_sets": sets}
    partial = Path(kept.path).with_suffix(".saving")
    torch.save(saved, partial)
    os.replace(partial, kept.path)


def finish_fit(trainer, model, datamodule, end: FitEnd) -> None:
    """After `trainer.fit`: the kept checkpoint calibrated on its validation predictions, tested, reported, logged and
    registered, in that order."""
    logger = journal_logger(trainer)
    with run_ends_here(logger):
        kept = restore_kept(trainer, model, end.checkpoint, end.files)
        validation = (
            kept.validation if kept.validation is not None else validation_predictions(trainer, model, datamodule)
        )
        temperature = calibrate(model, validation, end.calibration, logger, trainer.global_step)
        sets = fit_prediction_sets(model, validation, temperature, end.conformal)
        trainer.test(model, datamodule=datamodule, weights_only=True)
        test = end.predictions.predictions["test"]
        record_test_calibration(logger, test, temperature, trainer.global_step)
        record_test_sets(logger, test, sets, model.hparams.label_names, trainer.global_step)
        if logger is not None and kept.step is not None:
            logger.record_tags({KEPT_STEP_TAG: str(kept.step)})
        record_evaluation_report(
            logger, trainer, model, {"val": validation, "test": test}, end.clock, kept.summary(), sets
        )
        record_heldout(logger, model, datamodule)
        log_and_register(logger, model.model, datamodule.tokenizer, end.registry)
        keep_calibration(kept, end.files, temperature, sets)


def finish_test(trainer, model, predictions: EvaluationPredictions, clock: TrainingClock) -> None:
    """After `emo test` of a checkpoint or a registered model: the test's calibration and its report."""
    logger = journal_logger(trainer)
    with run_ends_here(logger):
        test = predictions.predictions["test"]
        record_test_calibration(logger, test, None, trainer.global_step)
        record_evaluation_report(logger, trainer, model, {"test": test}, clock)
