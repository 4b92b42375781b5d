"""Where runs are recorded: the tracking URI, and one quick check of it before anything loads.

A wrong URI or a server that is down is one line within seconds, not minutes of MLflow's retries.
"""

import contextlib
import os

import mlflow
from mlflow.exceptions import MlflowException

from emo import UserError, first_line
from emo.redact import redact

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow 3 refuses ./mlruns; the Model Registry needs a database
CHECK_TIMEOUT_S = 10
# What an error's text says when no server answered, and how emo says it.
UNREACHABLE = (
    ("NameResolution", "unknown host"),
    ("Connection refused", "connection refused"),
    ("NewConnectionError", "connection refused"),
    ("timed out", f"no answer in {CHECK_TIMEOUT_S} s"),
    ("Timeout", f"no answer in {CHECK_TIMEOUT_S} s"),
)
# MLflow's settings as emo runs it (set these variables to choose otherwise):
MLFLOW_DEFAULTS = {
    # MLflow retries a failed request 7 times over about two minutes; emo's journal retries for as long as it takes,
    # so a request may give up sooner and leave the thread free.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    # While it logs a model, MLflow replaces how every thread reads os.environ, to note which variables the model
    # needs: emo's masking reads them all from the main thread meanwhile, and the sender logging the model failed with
    # "Set changed size during iteration". An emo model needs no variable.
    "MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING": "false",
}


class TrackingServerError(UserError):
    """The tracking URI is wrong, or its server does not answer or refuses emo."""


def use_mlflow_defaults() -> None:
    for name, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # MLflow prints a run's link with the tracking URI as given, password and all: emo prints it masked (emo.store.sender).
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def resolve_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set (a server, say), else the embedded sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


@contextlib.contextmanager
def mlflow_http(retries: int, timeout_s: float):
    """MLflow's HTTP retry count and timeout for the calls inside (MLflow reads both from the environment)."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    previous = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def tracking_problem(uri: str, error: Exception) -> str:
    shown = redact(uri)
    text = str(error)
    status = error.get_http_status_code() if isinstance(error, MlflowException) else None
    if "filesystem tracking backend" in text:
        return f"tracking URI {shown}: MLflow 3 no longer records into a folder; use {DEFAULT_TRACKING_URI} or a server"
    if "unsupported URI" in text or "Could not find a registered tracking store" in text:
        return f"tracking URI {shown}: unknown scheme; use http(s)://host:port (a server), sqlite:///file.db or a database URL"
    reason = next((why for pattern, why in UNREACHABLE if pattern in text), None)
    if reason:
        return (
            f"cannot reach the MLflow tracking server at {shown} ({reason}): start it (make server), check "
            f"MLFLOW_TRACKING_URI, or unset it to record into {DEFAULT_TRACKING_URI}"
        )
    if status in (401, 403):
        return (
            f"the tracking server at {shown} refused emo (HTTP {status}): set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) to an account of that server"
        )
    if status and status != 500:
        return f"{shown} does not answer as an MLflow tracking server (HTTP {status}); check MLFLOW_TRACKING_URI"
    return f"tracking URI {shown}: {redact(first_line(text))}"


def check_tracking_uri(uri: str) -> None:
    """One request, no retries, a short timeout: a wrong URI or an absent server is one line within seconds."""
    with mlflow_http(retries=0, timeout_s=CHECK_TIMEOUT_S):
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
        except Exception as error:  # MLflow, SQLAlchemy and driver errors alike
            raise TrackingServerError(tracking_problem(uri, error)) from None
