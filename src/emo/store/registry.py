"""The Model Registry: a fitted model logged with MLflow's transformers flavor, registered, crowned champion;
and a registered model found and downloaded again by its `models:/` URI."""

import contextlib
import dataclasses
import importlib.metadata
import json
import re
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException

from emo import UserError, hub
from emo.redact import redact
from emo.selection import Decision, Evidence, challenge
from emo.spec import (
    DATA_DIGEST_TAG,
    DATASET_TAG,
    LABELS_TAG,
    MODEL_ARTIFACT,
    MODEL_TAG,
    MODEL_URI_TAG,
    PREDICTION_SETS_TAG,
    TEACHER_TAG,
    TEMPERATURE_TAG,
    VALIDATION_DIGEST_TAG,
    headline_metrics,
)
from emo.store.runs import kept_validation, logged_predictions

INPUT_EXAMPLE = ["i feel like i finally belong somewhere"]
RUN_ID = re.compile(r"[0-9a-f]{32}")
REGISTERED_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))/?")
DESCRIBED_SETTINGS = ("optimizer.init_args.lr", "data.batch_size", "trainer.max_epochs", "seed_everything")


def pip_requirements() -> list[str]:
    # Given explicitly: MLflow's inference imports torchvision, which is not installed.
    versions = {name: importlib.metadata.version(name) for name in ("mlflow", "torch", "transformers")}
    return [f"{name}=={version.split('+')[0]}" for name, version in versions.items()]


@contextlib.contextmanager
def tracking_store(uri: str):
    """MLflow's fluent API (log_model, register_model) pointed at `uri` for the calls inside."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def send_model(client, run_id: str, folder: Path) -> None:
    """A journal's `model` line: logs the model saved in the run folder, unless an earlier try did."""
    if MODEL_URI_TAG in client.get_run(run_id).data.tags:
        return
    # transformers loads only when a model is sent: `emo sync` and `emo report` start without it.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with tracking_store(client.tracking_uri):
        log_transformers_model(run_id, model, AutoTokenizer.from_pretrained(folder))


def register_once(client, run_id: str, name: str, alias: str, metric: str) -> None:
    """Registers the run's model (a journal's `register` line, a sweep's best trial), unless an earlier try did."""
    if not client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        with tracking_store(client.tracking_uri):
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
            metadata={"labels": [model.config.id2label[i] for i in range(model.config.num_labels)]},  # in id order
        )
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    # Leaving `start_run` ends the run FINISHED; the journal's own end record, sent after the rest, says how it ended.
    mlflow.MlflowClient().update_run(run_id, status="RUNNING")
    return info.model_uri


def evidence(client, run, metric: str) -> Evidence:
    """A run's validation at its kept checkpoint: `metric`'s value, the validation split's digest, its predictions."""
    try:
        predictions = logged_predictions(client, run, "val")
    except ValueError:  # a run from before validation predictions were logged
        predictions = None
    return Evidence(kept_validation(client, run).get(metric), run.data.tags.get(VALIDATION_DIGEST_TAG), predictions)


def champion_decision(client, name: str, alias: str, metric: str, run) -> Decision:
    """Whether `run`'s model takes the alias from the version holding it (`emo.selection.challenge`)."""
    try:
        champion = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return challenge(metric, evidence(client, run, metric), None)
    held = evidence(client, client.get_run(champion.run_id), metric)
    return challenge(metric, evidence(client, run, metric), held, f"version {champion.version}")


def register(run_id: str, name: str, alias: str = "champion", metric: str = "val/f1_weighted"):
    """Registers the model logged in `run_id` as a new version of `name`.

    The alias moves to the new version when it beats the current holder on `metric`, a validation metric at each
    one's kept checkpoint (`emo.selection`); the version's description says which rule decided, with its figures.
    Returns the version and whether it became the champion.
    """
    if not metric.startswith("val/"):
        raise UserError(f"champion metric {metric!r}: a champion is chosen on validation (val/...), never on test")
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    decision = champion_decision(client, name, alias, metric, run)
    version = mlflow.register_model(run.data.tags[MODEL_URI_TAG], name)
    if decision.promoted:
        client.set_registered_model_alias(name, alias, version.version)
    value = kept_validation(client, run).get(metric)
    client.set_model_version_tag(name, version.version, metric, str(value))
    for tag in (
        TEMPERATURE_TAG,
        PREDICTION_SETS_TAG,
    ):  # its calibration, in its weights and config (export copies them)
        if tag in run.data.tags:
            client.set_model_version_tag(name, version.version, tag, run.data.tags[tag])
    client.update_model_version(name, version.version, description=f"{version_description(run)} {decision.reason}")
    return version, decision.promoted


def version_description(run) -> str:
    """What a registered version was trained on, how, and how it scored on test (reported, never compared): readable
    in the registry without the run."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    digest = tags.get(DATA_DIGEST_TAG, "")
    scores = ", ".join(
        f"{label} {metrics[key]:.4f}" for key, label in headline_metrics("test").items() if key in metrics
    )
    settings = ", ".join(f"{key.split('.')[-1]} {params[key]}" for key in DESCRIBED_SETTINGS if key in params)
    teacher = f" Distilled from {tags[TEACHER_TAG]}." if TEACHER_TAG in tags else ""
    classes = f" Classes: {', '.join(json.loads(tags[LABELS_TAG]))}." if LABELS_TAG in tags else ""
    return (
        f"{tags.get(MODEL_TAG, '?')} fine-tuned for text classification on {tags.get(DATASET_TAG, '?')}"
        f"{f' (data sha256 {digest[:12]})' if digest else ''} by run {run.info.run_id} ({run.info.run_name}); "
        f"{settings}.{classes} Test: {scores or 'not tested'}.{teacher}"
    )


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


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A logged text-classification model, found by its registered name or by the run that logged it."""

    given: str  # as the user named it: models:/NAME@ALIAS, models:/NAME/VERSION or a run id
    model_uri: str  # what MLflow downloads
    run_id: str
    name: str | None = None  # the registered model's, for a registered version
    version: str | None = None

    @property
    def pinned(self) -> str:
        """The exact model, whatever an alias points to later: `models:/NAME/VERSION`, or the run's logged model."""
        return f"models:/{self.name}/{self.version}" if self.version else self.model_uri


def model_source(given: str, tracking_uri: str) -> ModelSource:
    """`models:/NAME@ALIAS`, `models:/NAME/VERSION` or a run id (its logged model); one line when it is not there."""
    if is_registered_model_uri(given):
        version = registered_version(given, tracking_uri)
        return ModelSource(
            given, f"models:/{version.name}/{version.version}", version.run_id, version.name, str(version.version)
        )
    if not RUN_ID.fullmatch(given):
        raise UserError(
            f"{given}: name a model as models:/NAME@ALIAS, models:/NAME/VERSION or the id of the run that logged it"
        )
    client = mlflow.MlflowClient(tracking_uri)
    try:
        run = client.get_run(given)
    except MlflowException:
        raise UserError(f"{given}: no run with this id in {redact(tracking_uri)}") from None
    if MODEL_URI_TAG not in run.data.tags:
        raise UserError(
            f"{given}: run {run.info.run_name!r} logged no model (its fit did not finish, or ran without log_model)"
        )
    return ModelSource(given, run.data.tags[MODEL_URI_TAG], given)


def download_model(source: ModelSource, tracking_uri: str, folder) -> tuple[Path, Path]:
    """Downloads a model logged by `log_transformers_model` into `folder`.

    Returns its Hugging Face model folder and its tokenizer folder, for `from_pretrained`.
    """
    try:
        path = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source.model_uri,
                dst_path=str(folder),
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
        )
    except MlflowException as error:
        raise UserError(f"{source.given}: cannot download {source.model_uri}: {hub.first_line(error)}") from None
    flavor = yaml.safe_load((path / "MLmodel").read_text())["flavors"].get("transformers", {})
    model, tokenizer = path / flavor.get("model_binary", MODEL_ARTIFACT), path / "components" / "tokenizer"
    if flavor.get("task") != "text-classification" or not tokenizer.is_dir():
        raise UserError(
            f"{source.given}: {source.model_uri} is not a text-classification model with its tokenizer "
            "(MLflow's transformers flavor)"
        )
    return model, tokenizer


def download_registered_model(uri: str, tracking_uri: str, folder) -> tuple[Path, Path]:
    """A registered model (`models:/...`) downloaded into `folder`: its model folder and its tokenizer folder."""
    source = model_source(uri, tracking_uri)
    model, tokenizer = download_model(source, tracking_uri, folder)
    print(f"Using registered model {source.name!r} version {source.version} (run {source.run_id})")
    return model, tokenizer
