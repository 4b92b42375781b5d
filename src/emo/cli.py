"""`python -m emo`: LightningCLI over the data module, the model, the trainer and MLflow tracking.

    python -m emo fit --config configs/base.yaml [--config more.yaml] [--model.learning_rate 5e-5]
    python -m emo {validate,test,predict} --config ... --ckpt_path path/to/best.ckpt
    python -m emo sweep --config configs/sweep.yaml      (emo/sweep.py)
    python -m emo report [--sweep NAME]                  (emo/report.py)

`fit` ends with `test` on the best checkpoint; then the model is logged and registered.
"""

import importlib
import sys
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from emo.data import LABELS, SPLITS, DataFormatError, EmotionDataModule, find_split_file
from emo.hub import HubUnreachableError, LocalPathError
from emo.model import EmotionClassifier
from emo.predict import PredictionWriter
from emo.registry import ModelRegistry
from emo.tracking import LogRunConfig, RunArtifacts

# Workers compete with the model for a laptop's few cores; num_workers stays a choice.
warnings.filterwarnings("ignore", ".*does not have many workers.*")

VAL_METRICS = {"val/loss", "val/acc", "val/f1_weighted", "val/f1_macro"} | {
    f"val/{kind}_{label}" for kind in ("f1", "precision", "recall") for label in LABELS
}
USER_ERRORS = (HubUnreachableError, LocalPathError, DataFormatError)


class EmoCLI(LightningCLI):
    """LightningCLI for emo; `callbacks` join the trainer's (a sweep adds its pruning callback)."""

    def __init__(self, args=None, run: bool = True, callbacks=()):
        super().__init__(
            EmotionClassifier,
            EmotionDataModule,
            save_config_callback=LogRunConfig,
            save_config_kwargs={"save_to_log_dir": False},
            trainer_defaults={"callbacks": [RunArtifacts(), *callbacks]},
            auto_configure_optimizers=False,  # the model builds AdamW with its own parameter groups
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser):
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/f1_weighted",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-epoch{epoch}-step{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(ModelRegistry, "registry")
        parser.add_lightning_class_args(PredictionWriter, "prediction")
        parser.link_arguments("model.model_name_or_path", "data.tokenizer_name_or_path")
        parser.link_arguments("data.label_names", "model.label_names", apply_on="instantiate")

    def before_instantiate_classes(self):
        subcommand = self.subcommand or "fit"  # run=False (Python use) builds the parts of a fit
        config = self.config[self.subcommand] if self.subcommand else self.config
        problem = config_problem(subcommand, config)
        if problem:
            self.parser.error(problem)
        if subcommand == "predict":
            config.trainer.logger = False  # predictions go to a file, not to a new MLflow run

    def after_fit(self):
        if self.trainer.fast_dev_run:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if best else None)


def config_problem(subcommand: str, config) -> str | None:
    """Combinations that would fail late (or silently) are refused before anything loads."""
    if config.data.data_dir:
        try:
            for split in SPLITS:
                find_split_file(Path(config.data.data_dir), split)
        except DataFormatError as error:
            return f"--data.data_dir: {error}"
    monitor, mode = config.checkpoint.monitor, config.checkpoint.mode
    if monitor not in VAL_METRICS:
        return f"--checkpoint.monitor {monitor!r}: choose a validation metric ({', '.join(sorted(VAL_METRICS)[:5])}, ...)"
    if (mode == "min") != monitor.endswith("loss"):
        return f"--checkpoint.mode {mode!r} is the wrong direction for {monitor!r}"
    if not config.registry.champion_metric.startswith("test/"):
        return f"--registry.champion_metric {config.registry.champion_metric!r}: compare models on a test/ metric"
    if subcommand == "fit" and config.trainer.limit_val_batches == 0:
        return "--trainer.limit_val_batches 0 leaves no validation to pick the best checkpoint"
    if subcommand == "predict" and not config.data.predict_file:
        return "predict needs --data.predict_file (a text file, one text a line)"
    return None


# Commands beside LightningCLI's own: their modules have a main(args).
COMMANDS = {"sweep": "emo.sweep", "report": "emo.report"}


def main(args=None) -> None:
    args = sys.argv[1:] if args is None else list(args)
    torch.set_float32_matmul_precision("high")  # TF32 on recent GPUs; no effect on CPU
    try:
        if args and args[0] in COMMANDS:
            importlib.import_module(COMMANDS[args[0]]).main(args[1:])
        else:
            EmoCLI(args=args)
    except USER_ERRORS as error:
        sys.exit(f"emo: error: {error}")
