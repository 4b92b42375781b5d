"""An experiment made ready for runs: the store answers, the UI shows it as model training, dead runs are ended."""

import contextlib
import sys
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from emo.spec import DEFAULT_EXPERIMENT, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from emo.store.liveness import mark_stale_runs
from emo.store.uri import check_tracking_uri


def mark_as_model_training(client, experiment_id: str) -> None:
    """Tags the experiment as model training, so the MLflow UI opens on its runs (not on a GenAI overview)."""
    experiment = client.get_experiment(experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) == MODEL_TRAINING_KIND:
        return
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    except MlflowException:
        # Processes starting together (sweep workers) insert the same tag at once and the store keeps one:
        # only a tag still missing afterwards is an error.
        if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
            raise


def find_or_create_experiment(client, name: str) -> str:
    """The experiment's id; processes creating it at the same instant get the same one."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created by another process meanwhile
        return client.get_experiment_by_name(name).experiment_id


def prepare_tracking(uri: str, experiment_name: str) -> None:
    """Before anything loads: the store answers, and RUNNING runs whose process died are ended as KILLED."""
    check_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        mark_as_model_training(client, experiment.experiment_id)
        for run_id in mark_stale_runs(client, experiment.experiment_id):
            print(f"emo: run {run_id} stopped beating (its process died); marked KILLED", file=sys.stderr)


MODEL_TRAINING_VIEW = (
    "workflowType=machine_learning"  # MLflow 3's UI opens on GenAI otherwise (or on the browser's memory)
)


def ui_url(base_url: str, store_uri: str, experiment_name: str = DEFAULT_EXPERIMENT) -> str:
    """The MLflow UI page of the experiment's runs in the Model training view (the experiments' list if it is not there)."""
    base = base_url.rstrip("/")
    experiment = None
    if not store_uri.startswith("sqlite:///") or Path(store_uri.removeprefix("sqlite:///")).is_file():  # not create one
        with contextlib.suppress(Exception):  # a store not reachable: the list of experiments
            experiment = mlflow.MlflowClient(store_uri).get_experiment_by_name(experiment_name)
    page = f"experiments/{experiment.experiment_id}/runs" if experiment else "experiments"
    return f"{base}/#/{page}?{MODEL_TRAINING_VIEW}"


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI, in the Model training view."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"
