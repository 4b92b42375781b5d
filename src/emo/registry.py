"""Model Registry: log the best model with MLflow's transformers flavor, register it, crown a champion."""

import importlib.metadata

import mlflow
from lightning.pytorch import Callback
from mlflow.exceptions import MlflowException

from emo import hub
from emo.tracking import mlflow_logger

MODEL_ARTIFACT = "model"
MODEL_URI_TAG = "emo.model_uri"  # on the run, so a sweep can register its best trial later
INPUT_EXAMPLE = ["i feel like i finally belong somewhere"]


def pip_requirements() -> list[str]:
    # Given explicitly: MLflow's inference imports torchvision, which is not installed.
    versions = {name: importlib.metadata.version(name) for name in ("mlflow", "torch", "transformers")}
    return [f"{name}=={version.split('+')[0]}" for name, version in versions.items()]


def send_model(run_id: str, folder) -> None:
    """The journal's `model` line: logs the model saved in the run folder, unless an earlier try did."""
    if MODEL_URI_TAG in mlflow.MlflowClient().get_run(run_id).data.tags:
        return
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    log_transformers_model(run_id, model, AutoTokenizer.from_pretrained(folder))


def send_registration(run_id: str, name: str, alias: str, metric: str) -> None:
    """The journal's `register` line: registers the run's model, unless an earlier try did."""
    if not mlflow.MlflowClient().search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        register(run_id, name, alias, metric)


def log_transformers_model(run_id: str, model, tokenizer) -> str:
    """Logs model + tokenizer as a text-classification pipeline in the run; returns the model URI."""
    with mlflow.start_run(run_id=run_id, nested=True), hub.offline_unless_reachable(model.name_or_path):
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            task="text-classification",
            name=MODEL_ARTIFACT,
            input_example=INPUT_EXAMPLE,
            pip_requirements=pip_requirements(),
        )
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def champion_score(client, name: str, alias: str, metric: str) -> float | None:
    try:
        champion = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return client.get_run(champion.run_id).data.metrics.get(metric)


def register(run_id: str, name: str, alias: str = "champion", metric: str = "test/f1_weighted"):
    """Registers the model logged in `run_id` as a new version of `name`.

    The alias moves to the new version when its `metric` beats the current holder's.
    Returns the version and whether it became the champion.
    """
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    version = mlflow.register_model(run.data.tags[MODEL_URI_TAG], name)
    score = run.data.metrics.get(metric)
    best = champion_score(client, name, alias, metric)
    promoted = score is not None and (best is None or score > best)
    if promoted:
        client.set_registered_model_alias(name, alias, version.version)
    client.set_model_version_tag(name, version.version, metric, str(score))
    return version, promoted


class ModelRegistry(Callback):
    """After `fit` and its test on the best checkpoint: logs the model and registers it.

    Args:
        log_model: Log the tested model with MLflow's transformers flavor (model + tokenizer).
        registered_model_name: Register it under this name; `null` logs without registering.
        champion_alias: Alias that moves to a new version when it beats the current holder.
        champion_metric: Metric of the runs compared for the alias.
    """

    def __init__(
        self,
        log_model: bool = True,
        registered_model_name: str | None = "distilbert-emotion-classifier",
        champion_alias: str = "champion",
        champion_metric: str = "test/f1_weighted",
    ):
        self.log_model = log_model
        self.registered_model_name = registered_model_name
        self.champion_alias = champion_alias
        self.champion_metric = champion_metric
        self.fitted = False
        self.registered = None

    def on_fit_end(self, trainer, pl_module):
        self.fitted = not trainer.fast_dev_run

    def on_test_end(self, trainer, pl_module):
        logger = mlflow_logger(trainer)
        if not (self.fitted and self.log_model and trainer.is_global_zero and logger):
            return
        self.fitted = False  # a later test in the same process is not a new model
        logger.record_model(pl_module.model, trainer.datamodule.tokenizer)
        if self.registered_model_name:
            logger.record_registration(self.registered_model_name, self.champion_alias, self.champion_metric)
