"""An experiment made ready for runs: the store answers, the UI shows it as model training, dead runs are ended."""

import sys

import mlflow
from mlflow.exceptions import MlflowException

from emo.spec import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
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
