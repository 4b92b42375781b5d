"""Everything a user can get wrong, checked before the model loads and before an MLflow run exists."""

import math
from pathlib import Path

import torch

from emo import UserError
from emo.data import check_inputs as check_data
from emo.hub import check_model_folder, max_positions
from emo.spec import is_maximized, metric_names
from emo.store import model_source
from emo.tracking import read_record


def config_problem(subcommand: str, config) -> str | None:
    """Combinations that would fail late (or silently) are refused before anything loads."""
    monitor, mode = config.checkpoint.monitor, config.checkpoint.mode
    choices = metric_names("val")
    if monitor not in choices:
        return f"--checkpoint.monitor {monitor!r}: choose a validation metric ({', '.join(sorted(choices)[:5])}, ...)"
    if (mode == "max") != is_maximized(monitor):
        return f"--checkpoint.mode {mode!r} is the wrong direction for {monitor!r}"
    if not config.registry.champion_metric.startswith("test/"):
        return f"--registry.champion_metric {config.registry.champion_metric!r}: compare models on a test/ metric"
    if subcommand == "fit" and config.trainer.limit_val_batches == 0:
        return "--trainer.limit_val_batches 0 leaves no validation to pick the best checkpoint"
    if subcommand == "predict" and not config.data.predict_file:
        return "predict needs --data.predict_file (a text file, one text a line)"
    if subcommand in ("validate", "test", "predict") and config.get("ckpt_path") in ("last", "best"):
        return f"--ckpt_path {config.ckpt_path}: {subcommand} needs the path of a checkpoint file"
    return None


def check_inputs(subcommand: str, config) -> None:
    """Data files, the model folder and the checkpoint file, read and checked before any of them is used."""
    check_data(config.data.data_dir if subcommand != "predict" else None, config.data.predict_file, subcommand)
    check_model_folder(config.model.model_name_or_path)
    positions = max_positions(config.model.model_name_or_path)
    if positions and config.data.max_length > positions:
        raise UserError(f"--data.max_length {config.data.max_length}: model {config.model.model_name_or_path!r} "
                        f"takes at most {positions} tokens")  # fmt: skip
    ckpt_path = config.get("ckpt_path")
    if ckpt_path and ckpt_path not in ("last", "best", "hpc"):
        read_record(Path(ckpt_path))  # exists, and is a checkpoint that loads with weights_only


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
        raise UserError(f"--trainer.val_check_interval {interval}: an epoch has {batches} training batches; give at most "
                        f"{batches}, a share of the epoch (0.25), or set --trainer.check_val_every_n_epoch null")  # fmt: skip


def check_teachers(teachers: list[str] | None, tracking_uri: str) -> None:
    """Each teacher is a logged text-classification model in the store, before the student loads."""
    for teacher in teachers or []:
        try:
            model_source(teacher, tracking_uri)
        except UserError as error:
            raise UserError(f"--model.teacher {error}") from None


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
        raise UserError(f"--ckpt_path {ckpt_path} is not a checkpoint of model {model.hparams.model_name_or_path!r}: "
                        f"{len(missing)} weights missing, {len(resized)} of another shape (e.g. {example})")  # fmt: skip
