"""Model Registry: log the best model with MLflow's transformers flavor, register it, crown a champion."""

import importlib.metadata
import re
from pathlib import Path

import mlflow
import yaml
from lightning.pytorch import Callback
from mlflow.exceptions import MlflowException

from emo import UserError, hub
from emo.redact import redact
from emo.tracking import mlflow_logger

MODEL_ARTIFACT = "model"
MODEL_URI_TAG = "emo.model_uri"  # on the run, so a sweep can register its best trial later
INPUT_EXAMPLE = ["i feel like i finally belong somewhere"]
REGISTERED_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))/?")


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
    client.update_model_version(name, version.version, description=version_description(run))
    return version, promoted


def version_description(run) -> str:
    """What a registered version was trained on, how, and how it scored: readable in the registry without the run."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    digest = tags.get("emo.data_digest", "")
    scores = ", ".join(f"{label} {metrics[key]:.4f}" for key, label in
                       (("test/acc", "accuracy"), ("test/f1_weighted", "weighted F1"), ("test/f1_macro", "macro F1"))
                       if key in metrics)  # fmt: skip
    settings = ", ".join(f"{key.split('.')[-1]} {params[key]}" for key in
                         ("model.learning_rate", "data.batch_size", "trainer.max_epochs", "seed_everything") if key in params)  # fmt: skip
    return (f"{tags.get('emo.model', '?')} fine-tuned for text classification on {tags.get('emo.dataset', '?')}"
            f"{f' (data sha256 {digest[:12]})' if digest else ''} by run {run.info.run_id} ({run.info.run_name}); "
            f"{settings}. Test: {scores or 'not tested'}.")  # fmt: skip


def is_registered_model_uri(value) -> bool:
    return isinstance(value, str) and value.startswith("models:/")


def registered_version(uri: str, tracking_uri: str):
    """The model version `models:/NAME@ALIAS` or `models:/NAME/VERSION` names; a one-line error says what is missing."""
    match = REGISTERED_MODEL_URI.fullmatch(uri)
    if not match:
        raise UserError(f"{uri}: name a registered model as models:/NAME@ALIAS or models:/NAME/VERSION")
    name, alias, number = match.group("name", "alias", "version")
    store = redact(tracking_uri)
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise UserError(f"{uri}: no MLflow store at {store}; set MLFLOW_TRACKING_URI to the store that holds the model")
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise UserError(f"{uri}: cannot read the Model Registry at {store}: {hub.first_line(error)}") from None
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise UserError(f"{uri}: no registered model {name!r} in {store}") from None
    if alias:
        held = ", ".join(f"{a} (version {v})" for a, v in sorted(model.aliases.items())) or "none"
        raise UserError(f"{uri}: registered model {name!r} has no alias {alias!r} (its aliases: {held})")
    latest = max((int(v.version) for v in model.latest_versions), default=0)
    raise UserError(f"{uri}: registered model {name!r} has no version {number} (latest: {latest})")


def download_registered_model(uri: str, tracking_uri: str, folder) -> tuple[Path, Path]:
    """Downloads a registered model logged by `log_transformers_model` into `folder`.

    Returns its Hugging Face model folder and its tokenizer folder, for `from_pretrained`.
    """
    version = registered_version(uri, tracking_uri)
    try:
        path = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{version.name}/{version.version}", dst_path=str(folder),
            tracking_uri=tracking_uri, registry_uri=tracking_uri,
        ))  # fmt: skip
    except MlflowException as error:
        raise UserError(f"{uri}: cannot download version {version.version}: {hub.first_line(error)}") from None
    flavor = yaml.safe_load((path / "MLmodel").read_text())["flavors"].get("transformers", {})
    model, tokenizer = path / flavor.get("model_binary", MODEL_ARTIFACT), path / "components" / "tokenizer"
    if flavor.get("task") != "text-classification" or not tokenizer.is_dir():
        raise UserError(f"{uri}: version {version.version} is not a text-classification model with its tokenizer "
                        "(MLflow's transformers flavor)")  # fmt: skip
    print(f"Using registered model {version.name!r} version {version.version} (run {version.run_id})")
    return model, tokenizer


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
