"""What a run records, as Lightning sees it: the MLflow logger, the callbacks that log the config, the timing, the
teachers' targets, the evaluations' predictions, the test report and the model, the last checkpoint, and how a killed
run resumes."""

from emo.tracking.calibration import TemperatureScaling
from emo.tracking.checkpoints import LastCheckpoint
from emo.tracking.clock import TrainingClock
from emo.tracking.evaluation_report import EvaluationReport
from emo.tracking.heldout import HeldOutPredictions
from emo.tracking.logger import JournalLogger, journal_logger, run_name
from emo.tracking.predictions import VAL_PREDICTIONS_KEY, EvaluationPredictions
from emo.tracking.registration import ModelRegistry
from emo.tracking.resume import ResumeError, hpc_checkpoint, plan_resume, read_record, remove_hpc_checkpoints
from emo.tracking.run_config import LogRunConfig
from emo.tracking.teachers import TeacherTargets

__all__ = [
    "VAL_PREDICTIONS_KEY",
    "EvaluationPredictions",
    "EvaluationReport",
    "HeldOutPredictions",
    "JournalLogger",
    "LastCheckpoint",
    "LogRunConfig",
    "ModelRegistry",
    "ResumeError",
    "TeacherTargets",
    "TemperatureScaling",
    "TrainingClock",
    "hpc_checkpoint",
    "journal_logger",
    "plan_resume",
    "read_record",
    "remove_hpc_checkpoints",
    "run_name",
]
