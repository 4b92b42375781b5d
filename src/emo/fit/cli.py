"""`EmoCLI`: LightningCLI over the data module, the model, the trainer and MLflow tracking.

`fit` ends with `emo.fit.finish.finish_fit`: the kept checkpoint calibrated, tested, reported, logged and registered.
Every input is checked before the model loads and before an MLflow run exists (`emo.fit.checks`); every checkpoint
file is read once (`emo.fit.checkpoint_files`).
"""

import logging
import sys
import tempfile
from pathlib import Path

import torch
from lightning.fabric.utilities.rank_zero import _get_rank, rank_prefixed_message
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from emo import UserError, first_line
from emo.data import EmotionDataModule
from emo.fit.checkpoint_files import CheckpointFiles, CheckpointFilesIO, is_checkpoint_file
from emo.fit.checks import (
    check_audit,
    check_checkpoint_fits,
    check_inputs,
    check_labels_match,
    check_model_parts,
    check_prediction_sets,
    check_teachers,
    check_train_size,
    check_validation_interval,
    config_problem,
    data_labels,
    model_folder_labels,
    validation_labels,
)
from emo.fit.finish import FitEnd, finish_fit, finish_test
from emo.fit.last_checkpoint import LastCheckpoint
from emo.fit.parser import EmoArgumentParser
from emo.fit.prediction import PredictionWriter
from emo.fit.prediction_sets import Conformal
from emo.fit.registration import Registry
from emo.fit.resume import RunRecord, hpc_checkpoint, kept_state_as_saved, plan_resume, remove_hpc_checkpoints
from emo.fit.step_seeds import StepSeeds
from emo.fit.teachers import prepare_teachers, record_teachers
from emo.fit.temperature import Calibration
from emo.hardware import fast_precision
from emo.model import EmotionClassifier
from emo.optim import DEFAULT_LR_SCHEDULER, DEFAULT_OPTIMIZER
from emo.params import run_settings
from emo.quiet import HeldMessages, logger_at, no_data_bars
from emo.spec import MODEL_TAG
from emo.store import download_registered_model, is_registered_model_uri, prepare_tracking, resolve_tracking_uri
from emo.tracking import EvaluationPredictions, JournalLogger, LogRunConfig, TrainingClock, journal_logger, run_name

SEED_LOGGER = "lightning.fabric.utilities.seed"  # where Lightning's seed_everything says the seed
STARTUP_LOGGER = "lightning.pytorch.utilities.rank_zero"  # where a new Trainer says its precision and devices
LOGGER_CLASS = f"{JournalLogger.__module__.removesuffix('.logger')}.{JournalLogger.__name__}"  # as configs name it


class EmoCLI(LightningCLI):
    """LightningCLI for emo; `callbacks` join the trainer's (a sweep adds its pruning callback)."""

    def __init__(self, args=None, run: bool = True, callbacks=()):
        self.resume_step = None
        self.model_labels = None  # (--ckpt_path, the classes of that checkpoint or registered model)
        self.startup_lines = HeldMessages(STARTUP_LOGGER)  # printed by after_instantiate_classes
        self.checkpoint_files = CheckpointFiles()  # every checkpoint this command reads, read once
        self.clock, self.predictions, self.run_record = TrainingClock(), EvaluationPredictions(), RunRecord()
        torch.set_float32_matmul_precision("high")  # TF32 on recent GPUs; no effect on CPU
        super().__init__(
            EmotionClassifier,
            EmotionDataModule,
            save_config_callback=LogRunConfig,
            save_config_kwargs={"save_to_log_dir": False},
            trainer_defaults={"callbacks": [self.clock, self.predictions, self.run_record, StepSeeds(), *callbacks]},
            parser_class=EmoArgumentParser,
            auto_configure_optimizers=False,  # the model builds AdamW with its own parameter groups
            args=args,
            run=run,
        )

    def _parse_ckpt_path(self):
        """LightningCLI's own: the model's settings from the checkpoint given as `--ckpt_path`, here from the one read of
        it (checked first: one line when it is not a checkpoint); a registered model (`models:/...`) is downloaded."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt_path = config.get("ckpt_path") if config else None
        if is_registered_model_uri(ckpt_path):
            self.use_registered_model(config, subcommand)
            return
        if not is_checkpoint_file(ckpt_path):
            return
        checkpoint = self.checkpoint_files.read(ckpt_path)
        self.model_labels = (ckpt_path, self.checkpoint_files.label_names(ckpt_path))
        hparams = dict(checkpoint.get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise

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
        parser.add_class_arguments(Calibration, "calibration")
        parser.add_class_arguments(Conformal, "conformal")
        parser.add_class_arguments(Registry, "registry")
        parser.add_lightning_class_args(PredictionWriter, "prediction")
        parser.add_argument(
            "--optimizer",
            type=OptimizerCallable,
            default=DEFAULT_OPTIMIZER,
            help="The optimizer (any torch.optim class: --optimizer torch.optim.SGD --optimizer.lr 0.05), of the "
            "model's parameter groups (no weight decay on biases and norms; --model.layer_lr_decay scales learning "
            "rates by depth). A fused kernel left unset (fused: null) is used where the device has one.",
        )
        parser.add_argument(
            "--lr_scheduler",
            type=LRSchedulerCallable,
            default=DEFAULT_LR_SCHEDULER,
            help="The learning-rate schedule, stepped every training step (default: a linear warm-up over "
            "warmup_ratio of the steps, then a linear decay to 0); one that takes total_steps is given the fit's.",
        )
        parser.link_arguments("optimizer", "model.optimizer")
        parser.link_arguments("lr_scheduler", "model.lr_scheduler")
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
            if self.model_labels and self.model_labels[1]:  # the model's classes name the columns; no data read
                config.data.labels = self.model_labels[1]
        with no_data_bars():  # a problem is a UserError: one line, exit status 1, nothing printed before it
            self.check_config(subcommand, config)
        self.run_record.settings = run_settings(config)

    def check_config(self, subcommand: str, config) -> None:
        """Every input, the tracking server, the audit, the teachers and the resume, in that order."""
        check_inputs(self.checkpoint_files, subcommand, config)
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
            check_prediction_sets(config.conformal, validation_labels(config), labels)
            check_teachers(config.model.teacher, uri, labels)
            if self.subcommand and tracked:
                self.resume_step = plan_resume(self.checkpoint_files, config, run_settings(config), uri)
            resumed = config.get("ckpt_path") or hpc_checkpoint(Path(config.trainer.default_root_dir or "."))
            if is_checkpoint_file(resumed):
                kept_state_as_saved(self.checkpoint_files, resumed)

    def after_instantiate_classes(self):
        if not hasattr(self, "trainer"):  # a sweep builds no trainer: each trial says its own seed and has its run
            return
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand:
            check_checkpoint_fits(self.checkpoint_files, config.get("ckpt_path"), self.model)
        if self.subcommand == "fit":
            check_model_parts(self.model, self.config_init[self.subcommand].calibration)
        if self.subcommand == "fit":
            with no_data_bars():  # the data read and tokenized here, once: the fit reuses it
                check_validation_interval(self.trainer, self.datamodule)
        self.startup_lines.release()  # the trainer's own lines and the seed, once its settings are known to be good
        self.announce_seed(config)
        logger = journal_logger(self.trainer)
        if logger is not None:
            name = run_name(config.model.model_name_or_path, config.optimizer.init_args.get("lr"))
            logger.attach(runs_dir=self.trainer.default_root_dir, resume_step=self.resume_step, name=name)

    def instantiate_trainer(self, **kwargs):
        try:
            with self.startup_lines:
                trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, TypeError) as error:  # Lightning's checks of trainer settings
            raise UserError(f"trainer settings: {first_line(error)}") from None
        # Lightning restores a fit or a test from the read of the checkpoint file the checks made.
        trainer.strategy.checkpoint_io = CheckpointFilesIO(trainer.strategy.checkpoint_io, self.checkpoint_files)
        return trainer

    @property
    def kept_checkpoint(self) -> ModelCheckpoint | None:
        """The callback that keeps the best checkpoint (the `checkpoint:` section), whatever else the trainer has."""
        return self.config_init[self.subcommand].get("checkpoint") if self.subcommand else None

    def before_fit(self):
        """The data read, the model's loss given what it needs of it (class weights, the teachers' targets), the run
        held open for the steps after the training."""
        logger, teachers = journal_logger(self.trainer), None
        if self.model.needs_training_data:  # read and tokenized here, once: the fit reuses it
            self.datamodule.prepare_data()
            self.datamodule.setup("fit")
            self.model.use_training_data(self.datamodule.splits["train"]["label"])
            teachers = prepare_teachers(self.model, self.datamodule, logger.tracking_uri if logger else None)
        if logger is None or self.trainer.fast_dev_run:
            return
        logger.hold_open()
        if teachers and self.resume_step is None and self.trainer.is_global_zero:
            record_teachers(logger, teachers)

    def after_fit(self):
        logger = journal_logger(self.trainer)
        if logger is not None and self.trainer.is_global_zero:  # the training has ended: else the test would load one
            remove_hpc_checkpoints(self.checkpoint_files, Path(self.trainer.default_root_dir), logger.run_id)
        self.trainer.strategy.barrier()
        if self.trainer.fast_dev_run:
            return
        config = self.config_init[self.subcommand]
        end = FitEnd(
            self.kept_checkpoint,
            self.checkpoint_files,
            self.predictions,
            self.clock,
            config.calibration,
            config.conformal,
            config.registry,
        )
        finish_fit(self.trainer, self.model, self.datamodule, end)

    def before_test(self):
        logger = journal_logger(self.trainer)
        if logger is not None:
            logger.hold_open()

    def after_test(self):
        finish_test(self.trainer, self.model, self.predictions, self.clock)
