"""What a run records, as Lightning sees it: the MLflow logger, the callbacks that log the config, the timing, the
test report and the model, the last checkpoint, and how a killed run resumes."""

from emo.tracking.checkpoints import LastCheckpoint
from emo.tracking.clock import TrainingClock
from emo.tracking.logger import JournalLogger, journal_logger, run_name
from emo.tracking.registration import ModelRegistry
from emo.tracking.resume import ResumeError, plan_resume, read_record
from emo.tracking.run_config import LogRunConfig
from emo.tracking.evaluation_report import EvaluationReport

__all__ = [
    "LastCheckpoint",
    "LogRunConfig",
    "JournalLogger",
    "ModelRegistry",
    "ResumeError",
    "EvaluationReport",
    "TrainingClock",
    "journal_logger",
    "plan_resume",
    "read_record",
    "run_name",
]
