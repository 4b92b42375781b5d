"""What a run records, as Lightning sees it: the MLflow logger (everything through the run's journal), the config as
the run starts, the training's timing, the evaluations' predictions, and the test's report."""

from emo.tracking.clock import TrainingClock
from emo.tracking.evaluation_report import record_evaluation_report
from emo.tracking.logger import JournalLogger, journal_logger, run_name
from emo.tracking.predictions import VAL_PREDICTIONS_KEY, VAL_STEP_KEY, EvaluationPredictions
from emo.tracking.run_config import LogRunConfig

__all__ = [
    "VAL_PREDICTIONS_KEY",
    "VAL_STEP_KEY",
    "EvaluationPredictions",
    "JournalLogger",
    "LogRunConfig",
    "TrainingClock",
    "journal_logger",
    "record_evaluation_report",
    "run_name",
]
