"""`LogRunConfig`: the resolved config in the MLflow run (`config.yaml`, every setting as a param, tags, the data
inputs, the texts the splits share), and why a run stopped.

Replaces LightningCLI's default callback, which writes into a log folder that sqlite and remote
stores do not have.
"""

import json
import os

import mlflow
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from mlflow.utils.git_utils import get_git_commit

from emo.params import run_settings
from emo.spec import (
    AUDIT_RUN_TAG,
    CONFIG_ARTIFACT,
    CONFIG_FILES_TAG,
    DATA_CONTEXT_TAG,
    DATA_DIGEST_TAG,
    DATASET_TAG,
    GIT_COMMIT_TAG,
    LABELS_TAG,
    LEAKS_ARTIFACT,
    LEAKS_DROPPED,
    MODEL_TAG,
    SPLITS,
    STAGE_TAG,
    TASK_TAG,
    VALIDATION_DIGEST_TAG,
)
from emo.tracking.logger import journal_logger


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
        )
        fields = {
            key: dataset.to_dict()[key] for key in ("name", "digest", "source_type", "source", "schema", "profile")
        }
        inputs.append({**fields, "tags": {DATA_CONTEXT_TAG: split}})
    return inputs


class LogRunConfig(SaveConfigCallback):
    """Records the resolved config in the MLflow run as it starts, and why it stopped when it stops early."""

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        logger = journal_logger(trainer)
        if logger is not None:
            logger.note_exception(exception)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = journal_logger(trainer)
        if logger is None or stage == "predict" or logger.resume_step is not None:
            return  # a resumed run recorded its config when it started
        logger.record_text(self.parser.dump(self.config, skip_unset=False), CONFIG_ARTIFACT)
        config_files = self.config.get("config") or []
        logger.record_params(run_settings(self.config))
        datamodule = trainer.datamodule
        tags = {
            TASK_TAG: "text-classification",
            STAGE_TAG: getattr(stage, "value", stage),
            MODEL_TAG: (logger.tags or {}).get(MODEL_TAG) or pl_module.hparams.model_name_or_path,
            DATASET_TAG: datamodule.source,
            LABELS_TAG: json.dumps(list(pl_module.hparams.label_names)),
            CONFIG_FILES_TAG: ", ".join(str(path) for path in config_files),
        }
        commit = get_git_commit(os.path.dirname(__file__))  # the code that ran, whatever started it
        if commit:
            tags[GIT_COMMIT_TAG] = commit
        if datamodule.hparams.get("audit_run"):  # trained on audited data: which audit, and what it changed
            tags[AUDIT_RUN_TAG] = datamodule.hparams.audit_run
            changed = {"drop": "data.audit_dropped", "relabel": "data.audit_relabelled"}[
                datamodule.hparams.audit_action
            ]
            logger.record_params({changed: datamodule.audit_changed})
        if datamodule.digests:
            tags[DATA_DIGEST_TAG] = datamodule.data_digest
            tags[VALIDATION_DIGEST_TAG] = datamodule.digests["validation"]
            logger.record_inputs(dataset_inputs(datamodule))
        if datamodule.leaks is not None:  # texts shared between the splits, as the run uses them (emo.data.leaks)
            dropped = {LEAKS_DROPPED: datamodule.leaks_dropped} if datamodule.hparams.get("drop_leaks") else {}
            logger.log_metrics({**datamodule.leaks.metrics(), **dropped}, step=0)
            logger.record_text(datamodule.leaks.table().to_csv(index=False), LEAKS_ARTIFACT)
        logger.record_tags(tags)
