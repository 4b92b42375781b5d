"""`EmoCLI`: LightningCLI over the data module, the model, the trainer and MLflow tracking.

`fit` ends with `test` on the best checkpoint; then the model is logged and registered. Every
input is checked before the model loads and before an MLflow run exists (`emo.cli.checks`).
"""

import logging
import tempfile
from pathlib import Path

import torch
from lightning.fabric.utilities.rank_zero import _get_rank, rank_prefixed_message
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from emo import UserError
from emo.cli.checks import (
    check_audit,
    check_checkpoint_fits,
    check_inputs,
    check_labels_match,
    check_teachers,
    check_train_size,
    check_validation_interval,
    checkpoint_labels,
    config_problem,
    data_labels,
    model_folder_labels,
)
from emo.cli.parser import EmoArgumentParser
from emo.data import EmotionDataModule
from emo.hardware import fast_precision
from emo.model import EmotionClassifier
from emo.params import run_settings
from emo.predict import PredictionWriter
from emo.quiet import HeldMessages, logger_at, no_data_bars
from emo.spec import MODEL_TAG
from emo.store import download_registered_model, is_registered_model_uri, prepare_tracking, resolve_tracking_uri
from emo.tracking import (
    EvaluationPredictions,
    EvaluationReport,
    HeldOutPredictions,
    JournalLogger,
    LastCheckpoint,
    LogRunConfig,
    ModelRegistry,
    TeacherTargets,
    TemperatureScaling,
    TrainingClock,
    journal_logger,
    plan_resume,
    read_record,
    remove_hpc_checkpoints,
    run_name,
)

SEED_LOGGER = "lightning.fabric.utilities.seed"  # where Lightning's seed_everything says the seed
STARTUP_LOGGER = "lightning.pytorch.utilities.rank_zero"  # where a new Trainer says its precision and devices
LOGGER_CLASS = f"{JournalLogger.__module__.removesuffix('.logger')}.{JournalLogger.__name__}"  # as configs name it


class EmoCLI(LightningCLI):
    """LightningCLI for emo; `callbacks` join the trainer's (a sweep adds its pruning callback)."""

    def __init__(self, args=None, run: bool = True, callbacks=()):
        self.resume_step = None
        self.model_labels = None  # (--ckpt_path, the classes of that checkpoint or registered model)
        self.startup_lines = HeldMessages(STARTUP_LOGGER)  # printed by after_instantiate_classes
        torch.set_float32_matmul_precision("high")  # TF32 on recent GPUs; no effect on CPU
        clock, predictions = TrainingClock(), EvaluationPredictions()
        super().__init__(
            EmotionClassifier,
            EmotionDataModule,
            save_config_callback=LogRunConfig,
            save_config_kwargs={"save_to_log_dir": False},
            trainer_defaults={
                "callbacks": [
                    clock,
                    predictions,
                    EvaluationReport(clock, predictions),
                    HeldOutPredictions(),
                    TeacherTargets(),
                    *callbacks,
                ]
            },
            parser_class=EmoArgumentParser,
            auto_configure_optimizers=False,  # the model builds AdamW with its own parameter groups
            args=args,
            run=run,
        )

    def _parse_ckpt_path(self):
        # LightningCLI reads the model's settings from --ckpt_path here, before any hook: check the file first.
        subcommand = self.config.get("subcommand")
        ckpt_path = subcommand and self.config[subcommand].get("ckpt_path")
        if is_registered_model_uri(ckpt_path):
            self.use_registered_model(self.config[subcommand], subcommand)
        elif ckpt_path and ckpt_path not in ("last", "best", "hpc"):
            read_record(Path(ckpt_path))
            self.model_labels = (ckpt_path, checkpoint_labels(ckpt_path))
        super()._parse_ckpt_path()

    def use_registered_model(self, config, subcommand: str) -> None:
        """`--ckpt_path models:/NAME@ALIAS` (or `/VERSION`): the registered model and tokenizer, no checkpoint file."""
        if subcommand == "fit":
            raise UserError(
                f"--ckpt_path {config.ckpt_path}: fit resumes from a checkpoint file; a registered model "
                "is for validate, test and predict"
            )
        logger = config.trainer.logger
        uri = getattr(getattr(logger, "init_args", None), "tracking_uri", None) or resolve_tracking_uri()
        self.registered_model_dir = tempfile.TemporaryDirectory(prefix="emo-registered-")  # removed with the CLI
        model, tokenizer = download_registered_model(config.ckpt_path, uri, self.registered_model_dir.name)
        config.model.model_name_or_path, config.data.tokenizer_name_or_path = str(model), str(tokenizer)
        self.model_labels = (config.ckpt_path, model_folder_labels(model))
        if getattr(logger, "class_path", None) == LOGGER_CLASS:  # the run names the model, not its temporary folder
            logger.init_args.tags = {**(logger.init_args.tags or {}), MODEL_TAG: config.ckpt_path}
        config.ckpt_path = None  # the registered weights are the model's

    def _set_seed(self) -> None:
        # Lightning says "Seed set to N" here, before emo checks the inputs and Lightning the trainer's settings: said
        # after both (`announce_seed`), so that a bad input prints its one line alone.
        with logger_at(SEED_LOGGER, logging.WARNING):
            super()._set_seed()

    def announce_seed(self, config) -> None:
        if config.get("seed_everything") is not False:
            logging.getLogger(SEED_LOGGER).info(
                rank_prefixed_message(f"Seed set to {config.seed_everything}", _get_rank())
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
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(TemperatureScaling, "calibration")
        parser.add_lightning_class_args(ModelRegistry, "registry")
        parser.add_lightning_class_args(PredictionWriter, "prediction")
        parser.add_argument(
            "--resume_new_run",
            type=bool,
            default=False,
            help="With --ckpt_path: continue the checkpoint's training in a new MLflow run "
            "(instead of refusing a resume whose settings or records differ).",
        )
        parser.link_arguments("model.model_name_or_path", "data.tokenizer_name_or_path")
        parser.link_arguments("data.label_names", "model.label_names", apply_on="instantiate")

    def before_instantiate_classes(self):
        """Checks every input before the model loads and before an MLflow run exists."""
        subcommand = self.subcommand or "fit"  # run=False (Python use) builds the parts of a fit
        config = self.config[self.subcommand] if self.subcommand else self.config
        problem = config_problem(subcommand, config)
        if problem:
            self.parser.error(problem)
        if config.trainer.precision is None:  # left to emo: bf16 autocast where the machine runs it fast
            config.trainer.precision = fast_precision(config.trainer.accelerator)
        if config.get("weights_only") is None and "weights_only" in config:
            config.weights_only = True  # checkpoints hold tensors and plain values: never run pickled code
        if subcommand == "predict":
            config.trainer.logger = False  # predictions go to a file, not to a new MLflow run
            if (
                self.model_labels and self.model_labels[1]
            ):  # the model's classes name the columns; no training data read
                config.data.labels = self.model_labels[1]
        with no_data_bars():  # a problem is a UserError: one line, exit status 1, nothing printed before it
            self.check_config(subcommand, config)

    def check_config(self, subcommand: str, config) -> None:
        """Every input, the tracking server, the audit, the teachers and the resume, in that order."""
        check_inputs(subcommand, config)
        if self.model_labels and subcommand in ("validate", "test"):
            check_labels_match(*self.model_labels, data_labels(config))
        logger = config.trainer.logger
        tracked = bool(logger) and getattr(logger, "class_path", None) == LOGGER_CLASS
        uri = (tracked and logger.init_args.tracking_uri) or resolve_tracking_uri()
        if self.subcommand and tracked:
            prepare_tracking(uri, logger.init_args.experiment_name)
        if subcommand != "predict":
            check_audit(config, uri)
        if subcommand == "fit":
            labels = data_labels(config)
            check_train_size(config.data.train_size, labels)
            check_teachers(config.model.teacher, uri, labels)
            if self.subcommand and tracked:
                self.resume_step = plan_resume(config, run_settings(config), uri)

    def after_instantiate_classes(self):
        if not hasattr(self, "trainer"):  # a sweep builds no trainer: each trial says its own seed and has its run
            return
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand:
            check_checkpoint_fits(config.get("ckpt_path"), self.model)
        if self.subcommand == "fit":
            with no_data_bars():  # the data read and tokenized here, once: the fit reuses it
                check_validation_interval(self.trainer, self.datamodule)
        self.startup_lines.release()  # the trainer's own lines and the seed, once its settings are known to be good
        self.announce_seed(config)
        logger = journal_logger(self.trainer)
        if logger is not None:
            name = run_name(config.model.model_name_or_path, config.model.learning_rate)
            logger.attach(runs_dir=self.trainer.default_root_dir, resume_step=self.resume_step, name=name)

    def instantiate_trainer(self, **kwargs):
        try:
            with self.startup_lines:
                return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, TypeError) as error:  # Lightning's checks of trainer settings
            raise UserError(f"trainer settings: {str(error).strip().splitlines()[0]}") from None

    def before_fit(self):
        logger = journal_logger(self.trainer)
        if logger is not None and not self.trainer.fast_dev_run:
            logger.keep_open_for_test(True)

    def after_fit(self):
        logger = journal_logger(self.trainer)
        if logger is not None:
            logger.keep_open_for_test(False)
            if self.trainer.is_global_zero:  # the training has ended: else the test would load one
                remove_hpc_checkpoints(Path(self.trainer.default_root_dir), logger.run_id)
            self.trainer.strategy.barrier()
        if self.trainer.fast_dev_run:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        if best:
            # The checkpoint's weights as saved: with weight averaging (EMAWeightAveraging) these are the average,
            # which Lightning would swap back to the raw weights when the checkpoint is loaded through `ckpt_path`.
            saved = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
            self.model.load_state_dict(saved["state_dict"])
        self.trainer.test(self.model, datamodule=self.datamodule, weights_only=True)
