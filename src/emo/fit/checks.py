"""Everything a user can get wrong, checked before the model loads and before an MLflow run exists."""

import json
import math
from collections import Counter
from pathlib import Path

import mlflow
import torch

from emo import UserError, first_line
from emo.calibration import classifier_output_layer
from emo.conformal import fewest_examples
from emo.data import check_data_files, checked_names, content_digest, load_local_splits
from emo.fit.checkpoint_files import LIGHTNING_PATHS, CheckpointFiles, is_checkpoint_file
from emo.fit.resume import hpc_checkpoint
from emo.hub import check_model_folder, max_positions
from emo.optim import as_callable, build_scheduler, check_layers_known
from emo.spec import LABELS_TAG, is_maximized, is_metric_name, metric_names
from emo.store import model_source, read_audit


def config_problem(subcommand: str, config) -> str | None:
    """Combinations that would fail late (or silently) are refused before anything loads."""
    monitor, mode = config.checkpoint.monitor, config.checkpoint.mode
    if not is_metric_name(monitor, "val"):
        choices = ", ".join(metric_names("val")[:5])
        return f"--checkpoint.monitor {monitor!r}: choose a validation metric ({choices}, ..., val/f1_<label>, ...)"
    if (mode == "max") != is_maximized(monitor):
        return f"--checkpoint.mode {mode!r} is the wrong direction for {monitor!r}"
    champion = config.registry.champion_metric
    if champion.startswith("test/"):
        return (
            f"--registry.champion_metric {champion!r}: a champion is chosen on validation (val/...); choosing on test "
            "would bias the very score the registry reports"
        )
    if not is_metric_name(champion, "val"):
        choices = ", ".join(metric_names("val")[:5])
        return f"--registry.champion_metric {champion!r}: choose a validation metric ({choices}, ...)"
    if problem := optimizer_problem(config):
        return problem
    if subcommand == "fit" and config.trainer.limit_val_batches == 0:
        return "--trainer.limit_val_batches 0 leaves no validation to pick the best checkpoint"
    holdout = config.data.get("holdout_fold")
    if holdout is not None and holdout >= config.data.folds:
        return f"--data.holdout_fold {holdout}: the folds are 0 to {config.data.folds - 1} (--data.folds {config.data.folds})"
    if holdout is not None and config.data.train_size:
        return "--data.holdout_fold with --data.train_size: a fold is of the whole training split; choose one"
    if subcommand == "predict" and not config.data.predict_file:
        return "predict needs --data.predict_file (a text file, one text a line)"
    if subcommand in ("validate", "test", "predict") and config.get("ckpt_path") in set(LIGHTNING_PATHS) - {"hpc"}:
        return f"--ckpt_path {config.ckpt_path}: {subcommand} needs the path of a checkpoint file"
    return None


def optimizer_problem(config) -> str | None:
    """An optimizer or a schedule its own class refuses (a negative learning rate, ...), built here on one weight."""
    weight = torch.nn.Parameter(torch.zeros(1))
    try:
        optimizer = as_callable(config.optimizer.as_dict())([weight])
    except (ValueError, TypeError) as error:
        return f"--optimizer: {first_line(error)}"
    try:
        build_scheduler(as_callable(config.lr_scheduler.as_dict()), optimizer, total_steps=10)
    except (ValueError, TypeError) as error:
        return f"--lr_scheduler: {first_line(error)}"
    return None


def check_inputs(files: CheckpointFiles, subcommand: str, config) -> None:
    """Data files, the model folder and the checkpoint file, read and checked before any of them is used."""
    data_dir = config.data.data_dir if subcommand != "predict" else None
    check_data_files(data_dir, config.data.predict_file, subcommand, config.data.labels, config.data.get("drop_leaks"))
    check_model_folder(config.model.model_name_or_path)
    positions = max_positions(config.model.model_name_or_path)
    if positions and config.data.max_length > positions:
        raise UserError(
            f"--data.max_length {config.data.max_length}: model {config.model.model_name_or_path!r} "
            f"takes at most {positions} tokens"
        )
    ckpt_path = config.get("ckpt_path")
    if is_checkpoint_file(ckpt_path):
        files.read(ckpt_path)  # exists, and is a checkpoint that loads with weights_only
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


def validation_labels(config) -> list[int] | None:
    """The validation split's labels (as ids) of local data, read without the Hub (a cache hit); None for a Hub dataset."""
    if not config.data.data_dir:
        return None
    return load_local_splits(config.data.data_dir, config.data.labels)["validation"]["label"]


def data_labels(config) -> list[str] | None:
    """The classes of the data (`emo.data.labels`), without the Hub: None for a Hub dataset without `data.labels`."""
    if config.data.labels:
        return checked_names(config.data.labels)
    if config.data.data_dir:
        return load_local_splits(config.data.data_dir)["train"].features["label"].names  # read once: cache hits
    return None


def model_folder_labels(folder) -> list[str] | None:
    """The classes of a fine-tuned Hugging Face model folder (its config's `id2label`)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    id2label = config.get("id2label") or {}
    return [id2label[str(i)] for i in range(len(id2label))] if id2label else None


def check_labels_match(what: str, model_labels: list[str] | None, labels: list[str] | None) -> None:
    """A model evaluated on data of other classes (or the same in another order) is refused in one line."""
    if model_labels and labels and list(model_labels) != list(labels):
        raise UserError(f"{what}: the model's classes are {list(model_labels)}, the data's are {list(labels)}")


def check_prediction_sets(conformal, validation_labels: list[int] | None, label_names: list[str] | None) -> None:
    """Enough validation examples for the sets asked (at least 1 / alpha - 1; of every class for class-conditional
    sets), where the data is local (a Hub dataset is checked when the sets are fitted)."""
    if conformal.alpha is None or validation_labels is None or not label_names:
        return
    need, alpha = fewest_examples(conformal.alpha), conformal.alpha
    if not conformal.class_conditional:
        if len(validation_labels) < need:
            raise UserError(
                f"--conformal.alpha {alpha:g}: {len(validation_labels)} validation examples are too few for "
                f"prediction sets at this alpha (at least {need}: 1 / alpha - 1); raise alpha or validate on more"
            )
        return
    counts = Counter(validation_labels)
    absent = [name for i, name in enumerate(label_names) if not counts[i]]
    if absent:
        raise UserError(
            f"--conformal.class_conditional: no validation example of {', '.join(absent)}: a class's threshold is "
            "fitted on its own examples; set it false, or validate on data with every class"
        )
    few = [f"{name} ({counts[i]})" for i, name in enumerate(label_names) if counts[i] < need]
    if few:
        raise UserError(
            f"--conformal.alpha {alpha:g}: class-conditional sets need at least {need} validation examples of each "
            f"class (1 / alpha - 1); too few: {', '.join(few)}"
        )


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


def check_checkpoint_fits(files: CheckpointFiles, ckpt_path, model) -> None:
    """A checkpoint of another model (other layers or sizes) is refused before a run is created for it."""
    if not is_checkpoint_file(ckpt_path):
        return
    saved = files.read(ckpt_path)["state_dict"]
    expected = model.state_dict()
    missing = [key for key in expected if key not in saved]
    resized = [key for key in expected if key in saved and saved[key].shape != expected[key].shape]
    if missing or resized:
        example = (missing or resized)[0]
        raise UserError(
            f"--ckpt_path {ckpt_path} is not a checkpoint of model {model.hparams.model_name_or_path!r}: "
            f"{len(missing)} weights missing, {len(resized)} of another shape (e.g. {example})"
        )


def check_model_parts(model, calibration) -> None:
    """The parts of an encoder a fit's settings need emo to know, before the fit starts: the classifier head's output
    layer (a temperature is folded into it) and, with layer-wise decay, the transformer layers."""
    if calibration.temperature_scaling:
        try:
            classifier_output_layer(model.model)
        except ValueError as error:
            raise UserError(f"--calibration.temperature_scaling: {error}; set it false to fit without it") from None
    if model.hparams.layer_lr_decay < 1:
        check_layers_known(model.model)


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
