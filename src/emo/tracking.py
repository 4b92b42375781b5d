"""MLflow tracking: where runs go, and what each run records besides its metrics.

- `check_tracking_uri`: one quick request before anything loads; a wrong URI or a server
  that is down is one line.
- `MLflowLogger`: Lightning's logger writing through the run's journal (`emo.journal`):
  training never waits for the server, an outage loses nothing, a killed run can be resumed.
- `LogRunConfig`: the resolved config as `config.yaml` and as params, plus tags and data inputs.
- `RunArtifacts`: training throughput, the test's predictions and error analysis (`emo.analysis`),
  run summary and description.
"""

import contextlib
import json
import os
import re
import resource
import sys
import threading
import time
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.utils.git_utils import get_git_commit

from emo import STARTED, UserError
from emo.analysis import (
    confident_mistakes,
    mistakes_markdown,
    normalised_confusion_figure,
    per_class_f1_figure,
    predictions_artifact,
    predictions_frame,
)
from emo.data import LABELS, SPLITS, batch_size_of
from emo.journal import HEARTBEAT_INTERVAL_TAG, Journal, Sender, mark_stale_runs, pending_journals, sync
from emo.redact import redact
from emo.resume import INTERRUPTIONS, RECORD_KEY

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow 3 refuses ./mlruns; the Model Registry needs a database
DEFAULT_EXPERIMENT = "Emotion-Classification-FineTuning"
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
CHECK_TIMEOUT_S = 10


class TrackingServerError(UserError):
    """The tracking URI is wrong, or its server does not answer or refuses emo."""


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
    reason = next((why for pattern, why in (("NameResolution", "unknown host"), ("Connection refused", "connection refused"),
                                             ("NewConnectionError", "connection refused"), ("timed out", f"no answer in {CHECK_TIMEOUT_S} s"),
                                             ("Timeout", f"no answer in {CHECK_TIMEOUT_S} s")) if pattern in text), None)  # fmt: skip
    if reason:
        return (f"cannot reach the MLflow tracking server at {shown} ({reason}): start it (make server), check "
                f"MLFLOW_TRACKING_URI, or unset it to record into {DEFAULT_TRACKING_URI}")  # fmt: skip
    if status in (401, 403):
        return (f"the tracking server at {shown} refused emo (HTTP {status}): set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) to an account of that server")  # fmt: skip
    if status and status != 500:
        return f"{shown} does not answer as an MLflow tracking server (HTTP {status}); check MLFLOW_TRACKING_URI"
    return f"tracking URI {shown}: {redact(text.splitlines()[0][:300])}"


def check_tracking_uri(uri: str) -> None:
    """One request, no retries, a short timeout: a wrong URI or an absent server is one line within seconds."""
    with mlflow_http(retries=0, timeout_s=CHECK_TIMEOUT_S):
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
        except Exception as error:  # MLflow, SQLAlchemy and driver errors alike
            raise TrackingServerError(tracking_problem(uri, error)) from None


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


def prepare_tracking(uri: str, experiment_name: str) -> None:
    """Before anything loads: the store answers, and RUNNING runs whose process died are ended as KILLED."""
    check_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        mark_as_model_training(client, experiment.experiment_id)
        for run_id in mark_stale_runs(client, experiment.experiment_id):
            print(f"emo: run {run_id} stopped beating (its process died); marked KILLED", file=sys.stderr)


class MLflowLogger(MLFlowLogger):
    """Lightning's `MLFlowLogger`; everything the run records goes through its journal (`emo.journal`).

    Args:
        experiment_name: MLflow experiment of the run.
        run_name: Display name of the run.
        tracking_uri: Store or server; default `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db`.
        tags: Extra run tags (a sweep passes `mlflow.parentRunId`).
        log_model: Upload the best checkpoint when training ends.
        run_id: Continue this run instead of starting one (`--ckpt_path last` sets it).
        heartbeat_interval_s: A live run sets the tag `emo.heartbeat` this often; one silent for five
            intervals is ended as KILLED by the next emo command.
        flush_timeout_s: At the end, how long to wait for an absent tracking server before leaving
            the rest in the journal for `emo sync`.
        system_metrics_interval_s: MLflow's system metrics (CPU, memory, disk, network; GPU with
            `nvidia-ml-py` installed) are sampled this often, as `system/*`; `null` turns them off.
    """

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, str] | None = None,
        log_model: bool = True,
        run_id: str | None = None,
        heartbeat_interval_s: PositiveInt = 60,
        flush_timeout_s: NonNegativeFloat = 60,
        system_metrics_interval_s: PositiveFloat | None = 10,
    ):
        super().__init__(
            experiment_name=experiment_name,
            run_name=redact(run_name) if run_name else None,
            tracking_uri=tracking_uri or resolve_tracking_uri(),
            tags={key: redact(str(value)) for key, value in (tags or {}).items()},  # sent as the run is created
            log_model=log_model,
            run_id=run_id,
        )
        self.heartbeat_interval_s = heartbeat_interval_s
        self.flush_timeout_s = flush_timeout_s
        self.system_metrics_interval_s = system_metrics_interval_s
        self.system_metrics: SystemMetricsMonitor | None = None
        self.runs_dir = "outputs"  # the run folder's parent; the CLI sets it to the trainer's default_root_dir
        self.resume_step: int | None = None  # set by emo.resume: the step of the checkpoint this run continues from
        self.keep_open = False  # the CLI sets it while a test follows the fit in the same run
        self.interrupted = False
        self.failure: str | None = None
        self.checkpoint_step: int | None = None
        self.best_checkpoint: str | None = None
        self.journal: Journal | None = None
        self.sender: Sender | None = None
        self.background_sync: threading.Thread | None = None

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    @rank_zero_experiment
    def experiment(self) -> mlflow.MlflowClient:
        if not self._initialized:
            resumed = self._run_id is not None
            _ = super().experiment  # finds or creates the experiment and the run
            mark_as_model_training(self._mlflow_client, self._experiment_id)
            self.open_journal(resumed)
            self.start_system_metrics(resumed)
        return self._mlflow_client

    @property
    def folder(self) -> Path:
        """The run's local folder: its journal, checkpoints and artifacts before they are sent."""
        return Path(self.runs_dir) / self.experiment_id / self.run_id

    def open_journal(self, resumed: bool) -> None:
        self.journal = Journal(self.folder, self._run_id, self._tracking_uri)
        if resumed:
            self._mlflow_client.update_run(self._run_id, status="RUNNING")
            if self.resume_step is not None:
                self.journal.drop_unsent_after(last_step_held(self.resume_step))
                self.journal.cover(last_step_held(self.resume_step))
        self.journal.append("tags", tags={HEARTBEAT_INTERVAL_TAG: self.heartbeat_interval_s})
        self.sender = Sender(self.journal, heartbeat_s=self.heartbeat_interval_s)
        self.sender.start()
        others = [folder for folder in pending_journals(Path(self.runs_dir)) if folder != self.folder]
        if others:  # records an earlier process could not send: send them now, beside training
            self.background_sync = threading.Thread(target=sync, args=(Path(self.runs_dir),), daemon=True)
            self.background_sync.start()

    def start_system_metrics(self, resumed: bool) -> None:
        """MLflow's own sampler, straight to the server: during an outage it stops (these are the only records not journaled)."""
        if self.system_metrics_interval_s:
            self.system_metrics = SystemMetricsMonitor(self._run_id, sampling_interval=self.system_metrics_interval_s,
                                                       resume_logging=resumed, tracking_uri=self._tracking_uri)  # fmt: skip
            self.system_metrics.start()

    def stop_system_metrics(self) -> None:
        """Its last sample is sent unless the server is away: then the sampler is left to its retries, off the exit path."""
        if self.system_metrics is not None:
            stopping = threading.Thread(target=self.system_metrics.finish, daemon=True)
            stopping.start()
            stopping.join(timeout=5)
            self.system_metrics = None

    # What the run records: every call appends to the journal and returns at once.

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        values = {re.sub(r"[^a-zA-Z0-9_/. -]+", "", key): float(value) for key, value in metrics.items() if not isinstance(value, str)}
        _ = self.experiment  # opens the run and its journal on first use
        self.journal.append("metrics", step=step or 0, metrics=values)

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        self.record_params(flatten(dict(params)))

    @rank_zero_only
    def record_params(self, params: dict) -> None:
        _ = self.experiment
        self.journal.append("params", params={key: str(value)[:MAX_PARAM_LENGTH] for key, value in params.items()})

    @rank_zero_only
    def record_tags(self, tags: dict) -> None:
        _ = self.experiment
        self.journal.append("tags", tags={key: str(value) for key, value in tags.items()})

    @rank_zero_only
    def record_inputs(self, datasets: list[dict]) -> None:
        _ = self.experiment
        self.journal.append("inputs", datasets=datasets)

    def artifact_file(self, artifact_file: str) -> Path:
        path = self.folder / "artifacts" / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @rank_zero_only
    def record_file(self, path: Path, artifact_dir: str | None = None) -> None:
        """A file of the run folder, uploaded under `artifact_dir` of the run's artifacts."""
        self.journal.append("artifact", local=str(Path(path).relative_to(self.folder)), path=artifact_dir)

    @rank_zero_only
    def record_text(self, text: str, artifact_file: str) -> None:
        path = self.artifact_file(artifact_file)
        path.write_text(redact(text), encoding="utf-8")
        self.record_file(path, os.path.dirname(artifact_file) or None)

    @rank_zero_only
    def record_figure(self, figure, artifact_file: str) -> None:
        path = self.artifact_file(artifact_file)
        figure.savefig(path)
        plt.close(figure)
        self.record_file(path, os.path.dirname(artifact_file) or None)

    @rank_zero_only
    def record_model(self, model, tokenizer) -> None:
        """Saves model and tokenizer into the run folder (safetensors); the sender logs them in MLflow's format."""
        folder = self.folder / "model"
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        self.journal.append("model", local="model")

    @rank_zero_only
    def record_registration(self, name: str, alias: str, metric: str) -> None:
        self.journal.append("register", name=name, alias=alias, metric=metric)

    # Checkpoints cover metric points; the end of the run sends what is left.

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        if self.journal is not None and self.checkpoint_step is not None:
            self.journal.cover(last_step_held(self.checkpoint_step))
        if self._log_model and checkpoint_callback.monitor and checkpoint_callback.best_model_path:
            self.best_checkpoint = checkpoint_callback.best_model_path

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if self.journal is None:
            return
        if status == "finished":
            # Lightning's SLURM handler, about to save a checkpoint of this very step and requeue the job,
            # which comes back to this run: send what that checkpoint holds, and only that.
            self.journal.cover(self.journal.last_step())
            self.flush(everything=False)
            return
        if status == "success" and self.keep_open:
            self.flush()  # the fit is over; its test follows in the same run
            return
        if self._log_model and self.best_checkpoint and os.path.exists(self.best_checkpoint):
            self.record_file(Path(self.best_checkpoint), Path(self.best_checkpoint).stem)
            self.best_checkpoint = None
        if self.failure:
            self.record_tags({"emo.failure": self.failure})
        self.stop_system_metrics()
        final = "FINISHED" if status == "success" else ("KILLED" if self.interrupted else "FAILED")
        self.journal.append("status", status=final)
        if self.flush(stop=True):
            self.journal.close()  # all sent: `emo sync` in another process may read it
        # else the sender keeps trying while this process lives (a sweep's next trials), holding the journal
        if self.interrupted:
            print(f"emo: run {self.run_id} stopped; continue it with the same command and --ckpt_path last", file=sys.stderr)

    def flush(self, stop: bool = False, everything: bool = True) -> bool:
        """Sends what is left, waiting `flush_timeout_s` at most; what the server did not take stays in the journal."""
        done = self.sender.stop(self.flush_timeout_s) if stop else self.sender.flush(self.flush_timeout_s, everything)
        if self.background_sync is not None and stop:
            self.background_sync.join(self.flush_timeout_s)
        for refusal in self.sender.refused:
            print(f"emo: warning: the tracking server refused a record of run {self.run_id}: {refusal}", file=sys.stderr)
        self.sender.refused.clear()
        if not done:
            print(f"emo: warning: the tracking server at {redact(self._tracking_uri)} did not take {self.journal.unsent} "
                  f"records of run {self.run_id} in {self.flush_timeout_s:.0f} s; they are kept in {self.folder} and "
                  f"`emo sync` sends them (so does the next `emo fit` with the same output folder)", file=sys.stderr)  # fmt: skip
        return done


def last_step_held(global_step: int) -> int:
    """The last metric step a checkpoint at `global_step` holds: Lightning logs batch n's metrics at step n - 1."""
    return global_step - 1


def mlflow_logger(trainer: Trainer) -> MLflowLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, MLflowLogger)), None)


def flatten(tree, prefix: str = "") -> dict:
    """`{"model": {"lr": 1}}` -> `{"model.lr": 1}`; list items get their index."""
    if isinstance(tree, dict) and tree:
        items = tree.items()
    elif isinstance(tree, list | tuple) and tree:
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def run_settings(config) -> dict[str, str]:
    """Every setting of a resolved config, as the run's params hold them."""
    settings = config.clone().as_dict()
    settings.pop("config", None)  # the files it came from: a tag, not a setting
    settings.get("model", {}).pop("label_names", None)  # linked from the data module when the classes are built
    return {key: redact(str(value))[:MAX_PARAM_LENGTH] for key, value in flatten(settings).items()}


def log_params(client, run_id: str, params: dict) -> None:
    """Params sent directly (a sweep's parent run); a run's own params go through its journal."""
    entries = [Param(key, redact(str(value))[:MAX_PARAM_LENGTH]) for key, value in params.items()]
    for start in range(0, len(entries), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, params=entries[start : start + 100])


def dataset_inputs(datamodule) -> list[dict]:
    """The splits actually used, with their content digests, for the run's Datasets panel (as journal fields)."""
    inputs = []
    for split in SPLITS:
        examples = datamodule.splits[split]
        dataset = mlflow.data.from_huggingface(
            examples.select_columns(["text", "label"]),
            path=datamodule.source,
            targets="label",
            name=f"emotion-{split}",
            digest=datamodule.digests[split][:20],
        )._to_mlflow_entity()
        fields = {key: getattr(dataset, key) for key in ("name", "digest", "source_type", "source", "schema", "profile")}
        inputs.append({**fields, "tags": {"mlflow.data.context": split}})
    return inputs


class LogRunConfig(SaveConfigCallback):
    """Records the resolved config in the MLflow run: `config.yaml`, every setting as a param, and tags.

    Replaces LightningCLI's default callback, which writes into a log folder that sqlite and
    remote stores do not have. Also writes the run record into every checkpoint (its run,
    settings and step, for `emo.resume`) and notes why a run stopped.
    """

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        checkpoint[RECORD_KEY] = {"run_id": logger.run_id, "experiment_id": logger.experiment_id,
                                  "step": trainer.global_step, "params": run_settings(self.config)}  # fmt: skip
        logger.checkpoint_step = trainer.global_step

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        logger.interrupted = isinstance(exception, INTERRUPTIONS)
        if not logger.interrupted:
            logger.failure = redact(f"{type(exception).__name__}: {str(exception).strip()[:500]}")

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or stage == "predict" or logger.resume_step is not None:
            return  # a resumed run recorded its config when it started
        logger.record_text(self.parser.dump(self.config, skip_none=False), "config.yaml")
        config_files = self.config.get("config") or []
        logger.record_params(run_settings(self.config))
        datamodule = trainer.datamodule
        tags = {
            "emo.task": "text-classification",
            "emo.stage": getattr(stage, "value", stage),
            "emo.model": (logger.tags or {}).get("emo.model") or pl_module.hparams.model_name_or_path,
            "emo.dataset": datamodule.source,
            "emo.config_files": ", ".join(str(path) for path in config_files),
        }
        commit = get_git_commit(os.path.dirname(__file__))  # the code that ran, whatever started it
        if commit:
            tags["mlflow.source.git.commit"] = commit
        if datamodule.digests:
            tags["emo.data_digest"] = datamodule.data_digest
            logger.record_inputs(dataset_inputs(datamodule))
        logger.record_tags(tags)


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class RunArtifacts(Callback):
    """Measures training throughput and logs the test results a reader needs besides the numbers.

    Artifacts under `test/`: `confusion_matrix.png`, `per_class_report.md` and `.json`; at the
    top: `summary.json` (data, timing, peak memory, best checkpoint, test metrics).
    """

    def __init__(self):
        self.train_seconds = 0.0
        self.train_examples = 0
        self.train_tokens = 0  # real tokens trained on (of this process)
        self.train_positions = 0  # tokens and padding
        self.fit_seconds = None
        self.seconds_to_first_step = None  # from the start of the process: imports, data, model
        self._fit_started = None
        self._clock_started = None
        self._in_train_epoch = False

    # Training time excludes validation, so samples/s compares with other trainers.
    def _start_clock(self):
        if self._clock_started is None:
            self._clock_started = time.perf_counter()

    def _stop_clock(self):
        if self._clock_started is not None:
            self.train_seconds += time.perf_counter() - self._clock_started
            self._clock_started = None

    def on_fit_start(self, trainer, pl_module):
        self._fit_started = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seconds_to_first_step is None:
            self.seconds_to_first_step = time.monotonic() - STARTED

    def on_train_epoch_start(self, trainer, pl_module):
        self._in_train_epoch = True
        self._start_clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_examples += batch_size_of(batch) * trainer.world_size
        mask = batch["attention_mask"]
        self.train_tokens = self.train_tokens + mask.sum()  # a tensor on the device: no wait for it each step
        self.train_positions += mask.numel()

    def on_validation_start(self, trainer, pl_module):
        self._stop_clock()

    def on_validation_end(self, trainer, pl_module):
        if self._in_train_epoch:
            self._start_clock()

    def on_train_epoch_end(self, trainer, pl_module):
        self._in_train_epoch = False
        self._stop_clock()

    def on_fit_end(self, trainer, pl_module):
        self._stop_clock()
        self.fit_seconds = time.perf_counter() - self._fit_started
        if self.train_seconds > 0 and trainer.logger:
            throughput = {"train/samples_per_sec": self.train_examples / self.train_seconds, "train/seconds": self.train_seconds}
            trainer.logger.log_metrics(throughput, step=trainer.global_step)

    def summary(self, trainer: Trainer, pl_module: LightningModule) -> dict:
        checkpoint = trainer.checkpoint_callback
        datamodule = trainer.datamodule
        return {
            "model": pl_module.hparams.model_name_or_path,
            "dataset": datamodule.source,
            "data_digest": datamodule.data_digest if datamodule.digests else None,
            "examples": {split: len(examples) for split, examples in datamodule.splits.items()},
            "epochs_trained": trainer.current_epoch,
            "global_steps": trainer.global_step,
            "train_examples_seen": self.train_examples,
            "train_seconds": round(self.train_seconds, 1),
            "train_samples_per_sec": round(self.train_examples / self.train_seconds, 2) if self.train_seconds else None,
            "train_tokens": int(self.train_tokens) * trainer.world_size,
            "train_padding_share": round(1 - int(self.train_tokens) / self.train_positions, 4) if self.train_positions else None,
            "fit_wall_seconds": round(self.fit_seconds, 1) if self.fit_seconds else None,
            "seconds_to_first_step": round(self.seconds_to_first_step, 1) if self.seconds_to_first_step else None,
            "peak_memory_mib": round(peak_memory_mib()),
            "devices": f"{trainer.world_size} x {trainer.strategy.root_device.type}",
            "best_checkpoint": checkpoint.best_model_path if checkpoint else None,
            "best_score": {checkpoint.monitor: float(checkpoint.best_model_score)} if checkpoint and checkpoint.best_model_score is not None else None,
            "test": {k: round(float(v), 5) for k, v in trainer.callback_metrics.items() if k.startswith("test/")},
        }

    @rank_zero_only
    def on_test_end(self, trainer, pl_module):
        logger = mlflow_logger(trainer)
        if logger is None:  # no tracking (--trainer.logger false): the summary still lands beside the checkpoints
            path = Path(trainer.default_root_dir) / "summary.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.summary(trainer, pl_module), indent=2), encoding="utf-8")
            return
        label_names = list(pl_module.hparams.label_names)
        confusion = pl_module.confusion_matrices["test"]
        figure, _ = pl_module.confusion["test"].plot(val=confusion, labels=label_names)
        figure.set_size_inches(7, 6)
        logger.record_figure(figure, "test/confusion_matrix.png")
        logger.record_figure(normalised_confusion_figure(confusion, label_names), "test/confusion_matrix_normalised.png")
        report = per_class_report(trainer.callback_metrics, confusion, label_names)
        logger.record_text(json.dumps(report, indent=2), "test/per_class_report.json")
        logger.record_text(report_markdown(report), "test/per_class_report.md")
        logger.record_figure(per_class_f1_figure(report), "test/f1_per_class.png")
        for stage, predicted in pl_module.predictions.items():  # test, and after a fit the kept checkpoint's validation
            predictions = split_predictions(trainer.datamodule, stage, predicted, label_names)
            logger.record_text(predictions.to_csv(index=False), predictions_artifact(stage))
            if stage == "test":
                logger.record_text(mistakes_markdown(confident_mistakes(predictions)), "test/confident_mistakes.md")
        summary = self.summary(trainer, pl_module)
        logger.record_text(json.dumps(summary, indent=2), "summary.json")
        logger.record_tags({"mlflow.note.content": run_description(summary)})  # the run page's description


def split_predictions(datamodule, stage: str, predictions: dict, label_names: list[str]):
    """The split's texts beside the gathered predictions, in the split file's order."""
    texts = datamodule.splits["validation" if stage == "val" else stage].sort("example")["text"]
    examples = predictions["example"].tolist()
    return predictions_frame([texts[i] for i in examples], predictions["label"], predictions["probabilities"], label_names, examples)


def run_description(summary: dict) -> str:
    """Markdown for the run page: what was trained on what, the test result, the kept epoch, the time it took."""
    test = summary["test"]
    best = summary["best_checkpoint"] or ""
    epoch = re.search(r"epoch(\d+)", Path(best).name)
    lines = [
        f"**{summary['model']}** fine-tuned on `{summary['dataset']}` "
        f"({summary['examples'].get('train', '?')} training examples, {summary['devices']}).",
        "",
        f"Test: accuracy **{test.get('test/acc', float('nan')):.4f}**, weighted F1 {test.get('test/f1_weighted', float('nan')):.4f}, "
        f"macro F1 {test.get('test/f1_macro', float('nan')):.4f}.",
        f"Best checkpoint: epoch {int(epoch.group(1)) + 1 if epoch else '?'} of {summary['epochs_trained']} "  # 1-based
        f"(by {', '.join(f'{k} = {v:.4f}' for k, v in (summary['best_score'] or {}).items()) or 'the last epoch'}).",
        f"Training: {summary['train_seconds']:.0f} s at {summary['train_samples_per_sec'] or 0:.0f} samples/s; "
        f"see test/ for the confusion matrices, per-class F1 and the most confident mistakes.",
    ]
    return "\n".join(lines)


def per_class_report(metrics: dict, confusion, label_names=LABELS) -> dict:
    support = confusion.sum(dim=1).tolist()
    return {
        label: {
            "precision": round(float(metrics[f"test/precision_{label}"]), 4),
            "recall": round(float(metrics[f"test/recall_{label}"]), 4),
            "f1": round(float(metrics[f"test/f1_{label}"]), 4),
            "support": int(support[i]),
        }
        for i, label in enumerate(label_names)
    }


def report_markdown(report: dict) -> str:
    lines = ["| label | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |" for label, r in report.items()]
    return "\n".join(lines) + "\n"
