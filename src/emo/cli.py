"""`python -m emo`: LightningCLI over the data module, the model, the trainer and MLflow tracking.

    python -m emo fit --config configs/base.yaml [--config more.yaml] [--model.learning_rate 5e-5]
    python -m emo fit ... --ckpt_path last             (continue a killed or interrupted fit, same MLflow run)
    python -m emo {validate,test,predict} --config ... --ckpt_path path/to/best.ckpt
    python -m emo predict --config ... --ckpt_path models:/NAME@ALIAS   (or models:/NAME/VERSION: a registered model)
    python -m emo sweep --config configs/sweep.yaml      (emo/sweep.py)
    python -m emo report [--sweep NAME] [--compare A B]  (emo/report.py)
    python -m emo sync [--root outputs]                  (send records a tracking outage kept back)

`fit` ends with `test` on the best checkpoint; then the model is logged and registered.
Everything a user can get wrong is checked before the model loads and before an MLflow run
exists, and reported as one line (`emo: error: ...`).
"""

import difflib
import importlib
import os
import re
import signal
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from emo import UserError
from emo.data import LABELS, EmotionDataModule
from emo.data import check_inputs as check_data
from emo.hardware import fast_precision
from emo.hub import check_model_folder, max_positions
from emo.model import EmotionClassifier
from emo.predict import PredictionWriter
from emo.registry import ModelRegistry, download_registered_model, is_registered_model_uri
from emo.resume import LastCheckpoint, plan_resume, read_record
from emo.tracking import (
    LogRunConfig,
    MLflowLogger,
    RunArtifacts,
    mlflow_logger,
    prepare_tracking,
    resolve_tracking_uri,
    run_settings,
)

# Workers compete with the model for a laptop's few cores; num_workers stays a choice.
warnings.filterwarnings("ignore", ".*does not have many workers.*")

VAL_METRICS = {"val/loss", "val/acc", "val/f1_weighted", "val/f1_macro"} | {
    f"val/{kind}_{label}" for kind in ("f1", "precision", "recall") for label in LABELS
}
LOGGER_CLASS = f"{MLflowLogger.__module__}.{MLflowLogger.__name__}"


def one_line(message: str) -> str:
    """jsonargparse's multi-line report of a bad value, as the one line that names the option and the problem."""
    key = re.match(r'Parser key "([^"]+)":', message)
    prefix = f"--{key.group(1)}: " if key else ""
    body = message[key.end() :] if key else message
    lines = [re.sub(r"^- ", "", line.strip()) for line in body.splitlines() if line.strip()]
    if lines and lines[0].startswith("Does not validate against any of the Union subtypes"):
        specific = [line for line in lines if re.search(r"is not accepted|does not conform|Not of type|does not exist", line)]
        if specific:
            return prefix + "; ".join(dict.fromkeys(specific))
        given = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")), "?")
        expected = [line for line in lines if line.startswith("Expected a typing.Literal[")]
        choices = [choice for line in expected for choice in re.findall(r"Literal\[([^\]]*)\]", line)]
        if choices:
            return f"{prefix}{given} is not one of {', '.join(choices)}" + (", null" if "NoneType" in body else "")
        return f"{prefix}{lines[0]} (given {given})"
    return prefix + " ".join(lines)


def known_options(parser) -> list[str]:
    """The option names of a parser and of its subcommands' parsers."""
    parsers = [parser, *getattr(getattr(parser, "_subcommands_action", None), "_name_parser_map", {}).values()]
    return [action.dest for each in parsers for action in each._actions if action.dest and action.dest != "help"]


class EmoArgumentParser(LightningArgumentParser):
    """Parse errors as one line, with a suggestion for a misspelt option, instead of the full usage."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        message = one_line(message)
        unknown = re.search(r"(?:unrecognized arguments: |does not accept option )'?-*([\w.]+)", message)
        if unknown:
            close = difflib.get_close_matches(unknown.group(1), known_options(self), n=1, cutoff=0.75)
            if close:
                message += f" (did you mean --{close[0]}?)"
        print(f"emo: error: {message}", file=sys.stderr)
        sys.exit(2)


class EmoCLI(LightningCLI):
    """LightningCLI for emo; `callbacks` join the trainer's (a sweep adds its pruning callback)."""

    def __init__(self, args=None, run: bool = True, callbacks=()):
        self.resume_step = None
        super().__init__(
            EmotionClassifier,
            EmotionDataModule,
            save_config_callback=LogRunConfig,
            save_config_kwargs={"save_to_log_dir": False},
            trainer_defaults={"callbacks": [RunArtifacts(), *callbacks]},
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
        super()._parse_ckpt_path()

    def use_registered_model(self, config, subcommand: str) -> None:
        """`--ckpt_path models:/NAME@ALIAS` (or `/VERSION`): the registered model and tokenizer, no checkpoint file."""
        if subcommand == "fit":
            raise UserError(f"--ckpt_path {config.ckpt_path}: fit resumes from a checkpoint file; a registered model "
                            "is for validate, test and predict")  # fmt: skip
        logger = config.trainer.logger
        uri = getattr(getattr(logger, "init_args", None), "tracking_uri", None) or resolve_tracking_uri()
        self.registered_model_dir = tempfile.TemporaryDirectory(prefix="emo-registered-")  # removed with the CLI
        model, tokenizer = download_registered_model(config.ckpt_path, uri, self.registered_model_dir.name)
        config.model.model_name_or_path, config.data.tokenizer_name_or_path = str(model), str(tokenizer)
        if getattr(logger, "class_path", None) == LOGGER_CLASS:  # the run names the model, not its temporary folder
            logger.init_args.tags = {**(logger.init_args.tags or {}), "emo.model": config.ckpt_path}
        config.ckpt_path = None  # the registered weights are the model's

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
        parser.add_lightning_class_args(ModelRegistry, "registry")
        parser.add_lightning_class_args(PredictionWriter, "prediction")
        parser.add_argument("--resume_new_run", type=bool, default=False,
                            help="With --ckpt_path: continue the checkpoint's training in a new MLflow run "
                                 "(instead of refusing a resume whose settings or records differ).")  # fmt: skip
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
        try:
            check_inputs(subcommand, config)
            logger = config.trainer.logger
            if self.subcommand and logger and getattr(logger, "class_path", None) == LOGGER_CLASS:
                uri = logger.init_args.tracking_uri or resolve_tracking_uri()
                prepare_tracking(uri, logger.init_args.experiment_name)
                if subcommand == "fit":
                    self.resume_step = plan_resume(config, run_settings(config), uri)
        except UserError as error:
            self.parser.error(str(error))

    def after_instantiate_classes(self):
        logger = mlflow_logger(self.trainer) if hasattr(self, "trainer") else None  # a sweep builds no trainer
        if logger is not None:
            logger.runs_dir = self.trainer.default_root_dir  # the run folder sits beside its checkpoints
            logger.resume_step = self.resume_step

    def instantiate_trainer(self, **kwargs):
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, TypeError) as error:  # Lightning's checks of trainer settings
            raise UserError(f"trainer settings: {str(error).strip().splitlines()[0]}") from None

    def before_fit(self):
        check_checkpoint_fits(self.config.fit.ckpt_path, self.model)
        logger = mlflow_logger(self.trainer)
        if logger is not None and not self.trainer.fast_dev_run:
            logger.keep_open = True  # the test of the best checkpoint belongs to the same run

    def after_fit(self):
        logger = mlflow_logger(self.trainer)
        if logger is not None:
            logger.keep_open = False
        if self.trainer.fast_dev_run:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        if best:
            # The checkpoint's weights as saved: with weight averaging (EMAWeightAveraging) these are the average,
            # which Lightning would swap back to the raw weights when the checkpoint is loaded through `ckpt_path`.
            saved = torch.load(best, map_location="cpu", weights_only=True)
            self.model.load_state_dict(saved["state_dict"])
            self.model.predictions.pop("val", None)  # the last epoch's: only the kept checkpoint's are logged
            if "val_predictions" in saved:
                self.model.predictions["val"] = saved["val_predictions"]
        self.trainer.test(self.model, datamodule=self.datamodule, weights_only=True)

    def before_validate(self):
        check_checkpoint_fits(self.config.validate.ckpt_path, self.model)

    def before_test(self):
        check_checkpoint_fits(self.config.test.ckpt_path, self.model)

    def before_predict(self):
        check_checkpoint_fits(self.config.predict.ckpt_path, self.model)


def config_problem(subcommand: str, config) -> str | None:
    """Combinations that would fail late (or silently) are refused before anything loads."""
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


def check_config_files(args: list[str]) -> None:
    """YAML errors with the file, line and column, before jsonargparse reports them without the file."""
    for flag, path in zip(args, args[1:], strict=False):
        if flag in ("--config", "-c") and Path(path).is_file():
            try:
                yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
                raise UserError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
            except UnicodeDecodeError:
                raise UserError(f"{path}: not a text (UTF-8) file") from None


def raised_by_lightning(error: BaseException) -> bool:
    """Lightning checks some trainer settings only when fitting starts, raising ValueError from its own code."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and f"{os.sep}lightning{os.sep}pytorch{os.sep}" in frames[-1].filename


# Commands beside LightningCLI's own: their modules have a main(args).
COMMANDS = {"sweep": "emo.sweep", "report": "emo.report", "sync": "emo.journal"}


# MLflow retries a failed request 7 times over about two minutes; emo's journal retries for as long as it takes,
# so a request may give up sooner and leave the thread free (set these variables to choose otherwise).
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def main(args=None) -> None:
    from emo.quiet import quiet_libraries

    quiet_libraries()
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    args = sys.argv[1:] if args is None else list(args)
    torch.set_float32_matmul_precision("high")  # TF32 on recent GPUs; no effect on CPU
    try:
        check_config_files(args)
        if args and args[0] in COMMANDS:
            importlib.import_module(COMMANDS[args[0]]).main(args[1:])
        else:
            EmoCLI(args=args)
    except (UserError, MisconfigurationException) as error:  # Lightning's name for settings it cannot run with
        print(f"emo: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    except ValueError as error:
        if not raised_by_lightning(error):
            raise
        print(f"emo: error: trainer settings: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    except SIGTERMException:  # Lightning stopped the fit cleanly; say how it ended as a shell expects
        sys.exit(128 + signal.SIGTERM)
