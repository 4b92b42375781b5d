"""MLflow without Lightning: where runs are recorded, each run's journal and its sender, whether a run's process
lives, `emo sync`, the Model Registry and direct run queries. Commands that do not train use this alone."""

from emo.store.audits import read_audit
from emo.store.experiment import find_or_create_experiment, mark_as_model_training, prepare_tracking, run_url, ui_url
from emo.store.journal import Journal, JournalBusyError, in_use, last_sent_step, pending_journals, read_entries
from emo.store.liveness import is_stale, mark_stale_runs, silence_s
from emo.store.outage import is_outage
from emo.store.patience import PatientClient, patiently, wait_for_server
from emo.store.registry import (
    ModelSource,
    download_model,
    download_registered_model,
    is_registered_model_uri,
    log_transformers_model,
    model_source,
    register,
    register_once,
    registered_version,
    version_description,
)
from emo.store.runs import children_filter, kept_step, kept_validation, log_params, logged_predictions, test_metrics
from emo.store.sender import Sender
from emo.store.sync import sync
from emo.store.uri import (
    DEFAULT_TRACKING_URI,
    TrackingServerError,
    check_tracking_uri,
    resolve_tracking_uri,
    use_mlflow_defaults,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "Journal",
    "PatientClient",
    "ModelSource",
    "JournalBusyError",
    "Sender",
    "TrackingServerError",
    "kept_step",
    "kept_validation",
    "logged_predictions",
    "check_tracking_uri",
    "children_filter",
    "download_model",
    "download_registered_model",
    "find_or_create_experiment",
    "in_use",
    "is_outage",
    "is_registered_model_uri",
    "is_stale",
    "last_sent_step",
    "log_params",
    "log_transformers_model",
    "mark_as_model_training",
    "mark_stale_runs",
    "model_source",
    "patiently",
    "pending_journals",
    "read_audit",
    "prepare_tracking",
    "read_entries",
    "register",
    "register_once",
    "registered_version",
    "resolve_tracking_uri",
    "run_url",
    "silence_s",
    "sync",
    "test_metrics",
    "ui_url",
    "use_mlflow_defaults",
    "version_description",
    "wait_for_server",
]
