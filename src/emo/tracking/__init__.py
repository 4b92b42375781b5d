"""What a run records, as Lightning sees it: the MLflow logger, the callbacks that log the config, the timing, the
test report and the model, the last checkpoint, and how a killed run resumes."""

from emo.tracking.checkpoints import LastCheckpoint
from emo.tracking.clock import TrainingClock
from emo.tracking.logger import MLflowLogger, mlflow_logger, run_name
from emo.tracking.registration import ModelRegistry
from emo.tracking.resume import ResumeError, plan_resume, read_record
from emo.tracking.run_config import LogRunConfig
from emo.tracking.test_report import TestReport

__all__ = [
    "LastCheckpoint",
    "LogRunConfig",
    "MLflowLogger",
    "ModelRegistry",
    "ResumeError",
    "TestReport",
    "TrainingClock",
    "mlflow_logger",
    "plan_resume",
    "read_record",
    "run_name",
]
