"""MLflow tracking: where runs go, and what each run records besides its metrics.

- `MLflowLogger`: Lightning's logger, with the store chosen when the run starts.
- `LogRunConfig`: the resolved config as `config.yaml` and as params, plus tags and data inputs.
- `RunArtifacts`: training throughput, confusion matrix, per-class report, run summary.
"""

import json
import os
import resource
import time

import mlflow
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.entities import DatasetInput, InputTag, Param
from mlflow.utils.git_utils import get_git_commit

from emo.data import LABELS, SPLITS, batch_size_of

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow 3 refuses ./mlruns; the Model Registry needs a database
DEFAULT_EXPERIMENT = "Emotion-Classification-FineTuning"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def resolve_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set (a server, say), else the embedded sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class MLflowLogger(MLFlowLogger):
    """Lightning's `MLFlowLogger`, reading `MLFLOW_TRACKING_URI` when built rather than when imported.

    Args:
        experiment_name: MLflow experiment of the run.
        run_name: Display name of the run.
        tracking_uri: Store or server; default `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db`.
        tags: Extra run tags (a sweep passes `mlflow.parentRunId`).
        log_model: Upload the best checkpoint when training ends (`all`: every saved checkpoint).
        run_id: Continue this run instead of starting one.
    """

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, str] | None = None,
        log_model: bool | str = True,
        run_id: str | None = None,
    ):
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=tracking_uri or resolve_tracking_uri(),
            tags=tags,
            log_model=log_model,
            run_id=run_id,
        )

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri


def mlflow_logger(trainer: Trainer) -> MLFlowLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)), None)


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


def log_params(client, run_id: str, params: dict) -> None:
    entries = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items()]
    for start in range(0, len(entries), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, params=entries[start : start + 100])


def dataset_inputs(datamodule) -> list[DatasetInput]:
    """The splits actually used, with their content digests, for the run's Datasets panel."""
    inputs = []
    for split in SPLITS:
        examples = datamodule.splits[split]
        dataset = mlflow.data.from_huggingface(
            examples.select_columns(["text", "label"]),
            path=datamodule.source,
            targets="label",
            name=f"emotion-{split}",
            digest=datamodule.digests[split][:20],
        )
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", split)]))
    return inputs


class LogRunConfig(SaveConfigCallback):
    """Records the resolved config in the MLflow run: `config.yaml`, every setting as a param, and tags.

    Replaces LightningCLI's default callback, which writes into a log folder that sqlite and
    remote stores do not have.
    """

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or stage == "predict":
            return
        client, run_id = logger.experiment, logger.run_id
        client.log_text(run_id, self.parser.dump(self.config, skip_none=False), "config.yaml")
        settings = self.config.clone().as_dict()
        config_files = settings.pop("config", None) or []
        log_params(client, run_id, flatten(settings))
        datamodule = trainer.datamodule
        tags = {
            "emo.task": "text-classification",
            "emo.stage": getattr(stage, "value", stage),
            "emo.model": pl_module.hparams.model_name_or_path,
            "emo.dataset": datamodule.source,
            "emo.config_files": ", ".join(str(path) for path in config_files),
        }
        commit = get_git_commit(os.path.dirname(__file__))  # the code that ran, whatever started it
        if commit:
            tags["mlflow.source.git.commit"] = commit
        if datamodule.digests:
            tags["emo.data_digest"] = datamodule.data_digest
            client.log_inputs(run_id, datasets=dataset_inputs(datamodule))
        for key, value in tags.items():
            client.set_tag(run_id, key, value)


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
        self.fit_seconds = None
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

    def on_train_epoch_start(self, trainer, pl_module):
        self._in_train_epoch = True
        self._start_clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_examples += batch_size_of(batch) * trainer.world_size

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
            "fit_wall_seconds": round(self.fit_seconds, 1) if self.fit_seconds else None,
            "peak_memory_mib": round(peak_memory_mib()),
            "devices": f"{trainer.world_size} x {trainer.strategy.root_device.type}",
            "best_checkpoint": checkpoint.best_model_path if checkpoint else None,
            "best_score": {checkpoint.monitor: float(checkpoint.best_model_score)} if checkpoint and checkpoint.best_model_score is not None else None,
            "test": {k: round(float(v), 5) for k, v in trainer.callback_metrics.items() if k.startswith("test/")},
        }

    @rank_zero_only
    def on_test_end(self, trainer, pl_module):
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        client, run_id = logger.experiment, logger.run_id
        confusion = pl_module.confusion_matrices["test"]
        figure, _ = pl_module.confusion["test"].plot(val=confusion, labels=list(pl_module.hparams.label_names))
        figure.set_size_inches(7, 6)
        client.log_figure(run_id, figure, "test/confusion_matrix.png")
        report = per_class_report(trainer.callback_metrics, confusion, pl_module.hparams.label_names)
        client.log_dict(run_id, report, "test/per_class_report.json")
        client.log_text(run_id, report_markdown(report), "test/per_class_report.md")
        client.log_text(run_id, json.dumps(self.summary(trainer, pl_module), indent=2), "summary.json")


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
