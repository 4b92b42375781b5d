"""Everything a user can get wrong, checked before the model loads and before an MLflow run exists."""

import json
import math
from pathlib import Path

import mlflow
import torch

from emo import UserError
from emo.data import check_inputs as check_data
from emo.data import checked_names, content_digest, load_local_splits
from emo.hub import check_model_folder, max_positions
from emo.spec import LABELS_TAG, is_maximized, is_metric_name, metric_names
from emo.store import model_source, read_audit
from emo.tracking import hpc_checkpoint, read_record


def config_problem(subcommand: str, config) -> str | None:
    """Combinations that would fail late (or silently) are refused before anything loads."""
    monitor, mode = config.checkpoint.monitor, config.checkpoint.mode
    if not is_metric_name(monitor, "val"):
        choices = ", ".join(metric_names("val")[:5])
        return f"--checkpoint.monitor {monitor!r}: choose a validation metric ({choices}, ..., val/f1_<label>, ...)"
    if (mode == "max") != is_maximized(monitor):
        return f"--checkpoint.mode {mode!r} is the wrong direction for {monitor!r}"
    if not config.registry.champion_metric.startswith("test/"):
        return f"--registry.champion_metric {config.registry.champion_metric!r}: compare models on a test/ metric"
    if subcommand == "fit" and config.trainer.limit_val_batches == 0:
        return "--trainer.limit_val_batches 0 leaves no validation to pick the best checkpoint"
    holdout = config.data.get("holdout_fold")
    if holdout is not None and holdout >= config.data.folds:
        return f"--data.holdout_fold {holdout}: the folds are 0 to {config.data.folds - 1} (--data.folds {config.data.folds})"
    if holdout is not None and config.data.train_size:
        return "--data.holdout_fold with --data.train_size: a fold is of the whole training split; choose one"
    if subcommand == "predict" and not config.data.predict_file:
        return "predict needs --data.predict_file (a text file, one text a line)"
    if subcommand in ("validate", "test", "predict") and config.get("ckpt_path") in ("last", "best"):
        return f"--ckpt_path {config.ckpt_path}: {subcommand} needs the path of a checkpoint file"
    return None


def check_inputs(subcommand: str, config) -> None:
    """Data files, the model folder and the checkpoint file, read and checked before any of them is used."""
    data_dir = config.data.data_dir if subcommand != "predict" else None
    check_data(data_dir, config.data.predict_file, subcommand, config.data.labels, config.data.get("drop_leaks"))
    check_model_folder(config.model.model_name_or_path)
    positions = max_positions(config.model.model_name_or_path)
    if positions and config.data.max_length > positions:
        raise UserError(
            f"--data.max_length {config.data.max_length}: model {config.model.model_name_or_path!r} "
            f"takes at most {positions} tokens"
        )
    ckpt_path = config.get("ckpt_path")
    if ckpt_path and ckpt_path not in ("last", "best", "hpc"):
        read_record(Path(ckpt_path))  # exists, and is a checkpoint that loads with weights_only
    evaluates_what_it_finds = subcommand != "fit" and not ckpt_path  # on SLURM, Lightning restores an hpc checkpoint
    if evaluates_what_it_finds and (left := hpc_checkpoint(Path(config.trainer.default_root_dir or "."))):
        raise UserError(
            f"{subcommand} without --ckpt_path on SLURM would load {left}, an unfinished fit's requeue checkpoint; "
            f"name the checkpoint to {subcommand} (--ckpt_path PATH, or hpc for that one)"
        )


def check_validation_interval(trainer, datamodule) -> None:
    """`--trainer.val_check_interval N` within an epoch's training batches: Lightning checks it only once the run exists."""
    interval = trainer.val_check_interval
    if not isinstance(interval, int) or trainer.check_val_every_n_epoch is None:
        return
    datamodule.prepare_data()
    datamodule.setup("fit")  # read and tokenized once: the fit reuses it
    batches = math.ceil(len(datamodule.splits["train"]) / (datamodule.hparams.batch_size * trainer.world_size))
    limit = trainer.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    if interval > batches:
        raise UserError(
            f"--trainer.val_check_interval {interval}: an epoch has {batches} training batches; give at most "
            f"{batches}, a share of the epoch (0.25), or set --trainer.check_val_every_n_epoch null"
        )


def check_train_size(train_size, labels: list[str] | None) -> None:
    """`--data.train_size N`: a stratified subset needs an example of every class (datasets refuses it mid-fit)."""
    if isinstance(train_size, int) and labels and train_size < len(labels):
        raise UserError(
            f"--data.train_size {train_size}: a stratified subset needs at least one example of each of the "
            f"{len(labels)} classes; give at least {len(labels)}"
        )


def data_labels(config) -> list[str] | None:
    """The classes of the data (`emo.data.labels`), without the Hub: None for a Hub dataset without `data.labels`."""
    if config.data.labels:
        return checked_names(config.data.labels)
    if config.data.data_dir:
        return load_local_splits(config.data.data_dir)["train"].features["label"].names  # read once: cache hits
    return None


def checkpoint_labels(ckpt_path: str) -> list[str] | None:
    """The classes a checkpoint of emo's model was trained on."""
    saved = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    names = saved.get("hyper_parameters", {}).get("label_names")
    return list(names) if names else None


def model_folder_labels(folder) -> list[str] | None:
    """The classes of a fine-tuned Hugging Face model folder (its config's `id2label`)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    id2label = config.get("id2label") or {}
    return [id2label[str(i)] for i in range(len(id2label))] if id2label else None


def check_labels_match(what: str, model_labels: list[str] | None, labels: list[str] | None) -> None:
    """A model evaluated on data of other classes (or the same in another order) is refused in one line."""
    if model_labels and labels and list(model_labels) != list(labels):
        raise UserError(f"{what}: the model's classes are {list(model_labels)}, the data's are {list(labels)}")


def check_teachers(teachers: str | list[str] | None, tracking_uri: str, labels: list[str] | None = None) -> None:
    """Each teacher is a logged text-classification model in the store, of the data's classes (where its run says),
    before the student loads."""
    for teacher in [teachers] if isinstance(teachers, str) else teachers or []:
        try:
            source = model_source(teacher, tracking_uri)
        except UserError as error:
            raise UserError(f"--model.teacher {error}") from None
        recorded = mlflow.MlflowClient(tracking_uri).get_run(source.run_id).data.tags.get(LABELS_TAG)
        check_labels_match(f"--model.teacher {teacher}", recorded and json.loads(recorded), labels)


def check_checkpoint_fits(ckpt_path, model) -> None:
    """A checkpoint of another model (other layers or sizes) is refused before a run is created for it."""
    if not ckpt_path or ckpt_path in ("last", "best", "hpc"):
        return
    saved = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    expected = model.state_dict()
    missing = [key for key in expected if key not in saved]
    resized = [key for key in expected if key in saved and saved[key].shape != expected[key].shape]
    if missing or resized:
        example = (missing or resized)[0]
        raise UserError(
            f"--ckpt_path {ckpt_path} is not a checkpoint of model {model.hparams.model_name_or_path!r}: "
            f"{len(missing)} weights missing, {len(resized)} of another shape (e.g. {example})"
        )


def check_audit(config, tracking_uri: str) -> None:
    """`--data.audit_run`: a finished audit of these very training examples (local data: checked here)."""
    if not config.data.get("audit_run"):
        return
    _, audited = read_audit(config.data.audit_run, tracking_uri)
    if config.data.data_dir:
        digest = content_digest(load_local_splits(config.data.data_dir, config.data.labels)["train"])
        if digest != audited:
            raise UserError(
                f"--data.audit_run {config.data.audit_run} audited other training examples (digest "
                f"{audited[:12]}, these are {digest[:12]}): audit this data first"
            )
