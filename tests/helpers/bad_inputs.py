"""Bad inputs, one per case, each built in a scratch folder: what a user gets wrong and the line emo must answer.

Used by `tests/test_bad_inputs.py` (every case through `emo.commands.main`, in-process; one case of every kind,
`ONE_OF_EVERY_KIND`, as a real `python -m emo` process, everything it prints seen) and by `scripts/bad_inputs_table.py`
(each case as a real `python -m emo` process, timed, as a Markdown table).
"""

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from .data import ROOT, SLURM, TRAINING_CONFIGS


@dataclasses.dataclass
class Context:
    folder: Path  # scratch space of this case
    model_dir: Path  # a good (tiny) model folder
    data_dir: Path  # a good data folder
    tracking_uri: str  # a good tracking server
    name: str = "bad-input"  # experiment and registered model of the case


@dataclasses.dataclass
class Case:
    name: str
    expected: str  # a fragment of the one line emo must print
    build: Callable[[Context], tuple[list[str], dict]]  # -> (command-line arguments, environment overrides)
    status: int = 1  # the exit status: 2 for the command line or a config file (emo.arguments), 1 for the rest
    runs_left: int = 0  # runs the case leaves: none, but one FAILED run where training itself started and failed


def fit(
    ctx: Context, *extra: str, model: Path | None = None, data: Path | None = None, command: str = "fit"
) -> list[str]:
    return [command, *TRAINING_CONFIGS, "--model.model_name_or_path", str(model or ctx.model_dir),
            "--data.data_dir", str(data or ctx.data_dir), "--trainer.max_epochs", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(ctx.folder / "outputs"),
            "--trainer.logger.init_args.experiment_name", ctx.name, "--registry.registered_model_name", ctx.name, *extra]  # fmt: skip


def sweep(ctx: Context, *extra: str) -> list[str]:
    return ["sweep", "--config", str(ROOT / "configs/sweep.yaml"), *fit(ctx)[1:], *extra]


def data_with(ctx: Context, name: str, content: bytes | None) -> Path:
    """The good data folder with one file replaced (None: a folder in its place)."""
    folder = ctx.folder / "data"
    shutil.copytree(ctx.data_dir, folder)
    for old in folder.glob(f"{Path(name).stem}.*"):
        old.unlink()
    if content is None:
        (folder / name).mkdir()
    else:
        (folder / name).write_bytes(content)
    return folder


def validation_without(ctx: Context, label: str) -> Path:
    """The good data folder whose validation split has no example of `label`."""
    lines = (ctx.data_dir / "val.txt").read_text().splitlines(keepends=True)
    return data_with(
        ctx, "val.txt", "".join(line for line in lines if line.strip().rpartition(";")[2] != label).encode()
    )


def every_training_text_in_validation(ctx: Context) -> Path:
    """The good data folder with its training examples as the validation split too."""
    return data_with(ctx, "val.txt", (ctx.data_dir / "train.txt").read_bytes())


def model_with(ctx: Context, change: Callable[[Path], None]) -> Path:
    folder = ctx.folder / "model"
    shutil.copytree(ctx.model_dir, folder)
    change(folder)
    return folder


def file(ctx: Context, name: str, content: bytes) -> Path:
    path = ctx.folder / name
    path.write_bytes(content)
    return path


def slurm_test_beside_a_requeue_checkpoint(ctx: Context) -> tuple[list[str], dict]:
    """`emo test` without a checkpoint, in a SLURM job, where a fit stopped by its time limit and never requeued left
    its checkpoint (Lightning's name for it) in the folder."""
    left = ctx.folder / "outputs" / "hpc_ckpt_1.ckpt"
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_bytes(b"the checkpoint of an unfinished fit")
    return fit(ctx, command="test"), SLURM


def plain(args: Callable[[Context], list[str]]) -> Callable[[Context], tuple[list[str], dict]]:
    return lambda ctx: (args(ctx), {})


GOOD_LINE = b"i feel fine;joy\n"
CASES = [
    # configs
    Case(
        "unknown option", "did you mean --data.batch_size", plain(lambda c: fit(c, "--data.batch_sise", "3")), status=2
    ),
    Case(
        "wrong type",
        "--model.distill_temperature: Not of type PositiveFloat",
        plain(lambda c: fit(c, "--model.distill_temperature", "abc")),
        status=2,
    ),
    Case(
        "out of range",
        "--data.batch_size: Not of type PositiveInt",
        plain(lambda c: fit(c, "--data.batch_size", "0")),
        status=2,
    ),
    Case(
        "not one of the choices",
        "--trainer.precision: 17 is not one of",
        plain(lambda c: fit(c, "--trainer.precision", "17")),
        status=2,
    ),
    Case(
        "a setting given none of its types",
        "--seed_everything: expected true/false or an integer (given abc)",
        plain(lambda c: fit(c, "--seed_everything", "abc")),
        status=2,
    ),
    Case(
        "trainer value Lightning refuses",
        "`max_epochs` must be a non-negative integer",
        plain(lambda c: fit(c, "--trainer.max_epochs", "-2")),
    ),
    Case(
        "trainer value Lightning refuses mid-fit",
        "val_check_interval",
        plain(lambda c: fit(c, "--trainer.val_check_interval", "1000")),
    ),
    Case(
        "bad combination",
        "choose a validation metric",
        plain(lambda c: fit(c, "--checkpoint.monitor", "train/loss")),
        status=2,
    ),
    Case(
        "unknown key in a config file",
        "does not accept option 'modle.dropout' (did you mean --model.dropout?)",
        plain(lambda c: fit(c, "--config", str(file(c, "typo.yaml", b"modle:\n  dropout: 0.1\n")))),
        status=2,
    ),
    Case(
        "unreadable YAML",
        "typo.yaml:3:1: not valid YAML",
        plain(lambda c: fit(c, "--config", str(file(c, "typo.yaml", b"model:\n  dropout: [1\n")))),
        status=2,
    ),
    Case(
        "config file missing",
        "--config: File does not exist",
        plain(lambda c: fit(c, "--config", str(c.folder / "nope.yaml"))),
        status=2,
    ),
    Case(
        "config file not text",
        "binary.yaml: not a text (UTF-8) file",
        plain(lambda c: fit(c, "--config", str(file(c, "binary.yaml", b"\xff\xfe\x00\x01model")))),
        status=2,
    ),
    # data
    Case("data folder missing", "no file for the train split", plain(lambda c: fit(c, data=c.folder / "nowhere"))),
    Case(
        "data folder is a file",
        "is a file; give the folder",
        plain(lambda c: fit(c, data=file(c, "data.txt", GOOD_LINE))),
    ),
    Case(
        "split file is a folder",
        "train.txt is a folder, not a file",
        plain(lambda c: fit(c, data=data_with(c, "train.txt", None))),
    ),
    Case(
        "not UTF-8",
        "train.txt:2: not UTF-8 text (byte 0xe9",
        plain(lambda c: fit(c, data=data_with(c, "train.txt", GOOD_LINE + b"caf\xe9 time;joy\n"))),
    ),
    Case(
        "binary content",
        "train.txt: binary content",
        plain(lambda c: fit(c, data=data_with(c, "train.txt", b"PK\x03\x04\x00\x00"))),
    ),
    Case(
        "empty split",
        "val.txt: no examples (the file is empty or blank)",
        plain(lambda c: fit(c, data=data_with(c, "val.txt", b"\n  \n"))),
    ),
    Case(
        "label out of range",
        "test.txt:2: unknown label '6'",
        plain(lambda c: fit(c, data=data_with(c, "test.txt", GOOD_LINE + b"so odd;6\n"))),
    ),
    Case(
        "missing separator",
        "train.txt:1: expected '<text>;<label>'",
        plain(lambda c: fit(c, data=data_with(c, "train.txt", b"no label here\n"))),
    ),
    Case(
        "extra column",
        "unexpected column(s) source",
        plain(lambda c: fit(c, data=data_with(c, "train.csv", b"text,label,source\nhi,joy,web\n"))),
    ),
    Case(
        "short CSV row",
        "train.csv: line 3: expected 2 fields, found 1",
        plain(lambda c: fit(c, data=data_with(c, "train.csv", b"text,label\nhi,joy\nlonely\n"))),
    ),
    Case(
        "broken JSON line",
        "train.jsonl: line 2: not valid JSON",
        plain(lambda c: fit(c, data=data_with(c, "train.jsonl", b'{"text": "hi", "label": 1}\n{"text": "hi"\n'))),
    ),
    Case("subset smaller than the classes", "--data.train_size 3:", plain(lambda c: fit(c, "--data.train_size", "3"))),
    Case(
        "dataset_info.json not JSON",
        "dataset_info.json: line 1: not valid JSON",
        plain(lambda c: fit(c, data=data_with(c, "dataset_info.json", b"{oops\n"))),
    ),
    Case(
        "a label dataset_info.json does not name",
        "test.txt:2: unknown label 'optimism' (expected one of sadness, joy, love, anger, fear, surprise or 0-5, as",
        plain(lambda c: fit(c, data=data_with(c, "test.txt", GOOD_LINE + b"so hopeful;optimism\n"))),
    ),
    Case(
        "no training text left without the leaks",
        "--data.drop_leaks: the text of every training example",
        plain(
            lambda c: fit(
                c,
                "--data.drop_leaks",
                "true",
                "--data.labels",
                "[sadness, joy, love, anger, fear, surprise]",
                data=every_training_text_in_validation(c),
            )
        ),
    ),
    Case(
        "not Parquet",
        "train.parquet: not a Parquet file",
        plain(lambda c: fit(c, data=data_with(c, "train.parquet", b"text,label\n"))),
    ),
    # model folders
    Case("model folder missing", "no such local file or folder", plain(lambda c: fit(c, model=c.folder / "no-model"))),
    Case(
        "model folder without config",
        "has no config.json",
        plain(lambda c: fit(c, model=model_with(c, lambda m: (m / "config.json").unlink()))),
    ),
    Case(
        "model config not JSON",
        "config.json: not valid JSON",
        plain(lambda c: fit(c, model=model_with(c, lambda m: (m / "config.json").write_text("{oops")))),
    ),
    Case(
        "model folder without weights",
        "has no weights",
        plain(lambda c: fit(c, model=model_with(c, lambda m: (m / "model.safetensors").unlink()))),
    ),
    Case(
        "longer than the model takes",
        "--data.max_length 4096: model",
        plain(lambda c: fit(c, "--data.max_length", "4096")),
    ),
    Case(
        "damaged weights",
        "cannot be loaded",
        plain(lambda c: fit(c, model=model_with(c, lambda m: (m / "model.safetensors").write_bytes(b"\x08garbage")))),
    ),
    # checkpoints
    Case(
        "checkpoint missing",
        "no such file",
        plain(lambda c: fit(c, "--ckpt_path", str(c.folder / "none.ckpt"), command="test")),
    ),
    Case(
        "not a checkpoint",
        "notes.ckpt: not a checkpoint (checkpoints are torch.save archives)",
        plain(lambda c: fit(c, "--ckpt_path", str(file(c, "notes.ckpt", b"hello")), command="test")),
    ),
    Case(
        "checkpoint of another model",
        "is not a checkpoint of model",
        plain(lambda c: fit(c, "--ckpt_path", str(foreign_checkpoint(c)), command="test")),
    ),
    Case("nothing to resume", "no last checkpoint of an emo run", plain(lambda c: fit(c, "--ckpt_path", "last"))),
    Case(
        "test on SLURM beside a requeue checkpoint",
        "test without --ckpt_path on SLURM would load",
        slurm_test_beside_a_requeue_checkpoint,
    ),
    # predict files
    Case(
        "predict file missing",
        "texts.txt: no such file",
        plain(lambda c: fit(c, "--data.predict_file", str(c.folder / "texts.txt"), command="predict")),
    ),
    Case(
        "predict file empty",
        "no texts to predict",
        plain(lambda c: fit(c, "--data.predict_file", str(file(c, "texts.txt", b"\n\n")), command="predict")),
    ),
    Case(
        "predict file binary",
        "binary content",
        plain(
            lambda c: fit(
                c, "--data.predict_file", str(file(c, "texts.txt", b"\x89PNG\r\n\x1a\n\x00")), command="predict"
            )
        ),
    ),
    Case(
        "predict without a file",
        "predict needs --data.predict_file",
        plain(lambda c: fit(c, command="predict")),
        status=2,
    ),
    # tracking
    Case(
        "server not running",
        "cannot reach the MLflow tracking server at http://127.0.0.1:9 (connection refused)",
        lambda c: (fit(c), {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}),
    ),
    Case(
        "unknown host",
        "(unknown host)",
        lambda c: (fit(c), {"MLFLOW_TRACKING_URI": "http://no-such-host.invalid:5000"}),
    ),
    Case(
        "file store",
        "MLflow 3 no longer records into a folder",
        lambda c: (fit(c), {"MLFLOW_TRACKING_URI": str(c.folder / "mlruns")}),
    ),
    Case(
        "sweep without its server",
        "cannot reach the MLflow tracking server at http://127.0.0.1:9",
        lambda c: (
            sweep(c, "--sweep.storage", f"sqlite:///{c.folder}/optuna.db"),
            {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
        ),
    ),
    Case("unknown scheme", "unknown scheme", lambda c: (fit(c), {"MLFLOW_TRACKING_URI": "htp://localhost:5000"})),
    Case(
        "config file empty",
        "empty.yaml: an empty config file",
        plain(lambda c: fit(c, "--config", str(file(c, "empty.yaml", b"\n")))),
        status=2,
    ),
    Case(
        "config file not a mapping",
        "list.yaml: a config file holds a mapping of settings",
        plain(lambda c: fit(c, "--config", str(file(c, "list.yaml", b"- model\n- data\n")))),
        status=2,
    ),
    # sweeps, sync, report
    Case(
        "sweep storage not a database",
        "--sweep.storage sqlite:///",
        plain(
            lambda c: sweep(
                c, "--sweep.storage", f"sqlite:///{file(c, 'optuna.db', b'just text, not a database' * 40)}"
            )
        ),
    ),
    Case("sweep storage not a URL", "not a database URL", plain(lambda c: sweep(c, "--sweep.storage", "optuna.db"))),
    Case(
        "sync of a folder that is not there", "--root", plain(lambda c: ["sync", "--root", str(c.folder / "nowhere")])
    ),
    Case("sync option misspelt", "did you mean --root", plain(lambda c: ["sync", "--rot", str(c.folder)]), status=2),
    Case(
        "report of an experiment that is not there",
        "no MLflow experiment named 'no-such-experiment'",
        plain(lambda c: ["report", "--experiment", "no-such-experiment"]),
    ),
    Case(
        "report by a test metric",
        "select runs by a validation metric",
        plain(lambda c: ["report", "--metric", "test/acc"]),
    ),
    Case(
        "report option misspelt", "did you mean --experiment", plain(lambda c: ["report", "--experment", "x"]), status=2
    ),
    Case(
        "compare runs that are not there",
        "--compare: no run 'no-such-run'",
        plain(lambda c: ["report", "--compare", "no-such-run", "other-run"]),
    ),
    Case(
        "registered model not there",
        "models:/no-such-model@champion: no registered model 'no-such-model'",
        plain(
            lambda c: fit(
                c,
                "--data.predict_file",
                str(file(c, "texts.txt", b"hello\n")),
                "--ckpt_path",
                "models:/no-such-model@champion",
                command="predict",
            )
        ),
    ),
    # prediction sets
    Case(
        "alpha of the sets outside (0, 1)",
        "--conformal.alpha: Not of type OpenUnitInterval",
        plain(lambda c: fit(c, "--conformal.alpha", "1.5")),
        status=2,
    ),
    Case(
        "too few validation examples for the alpha of the sets",
        "validation examples are too few for prediction sets at this alpha (at least 999",
        plain(lambda c: fit(c, "--conformal.alpha", "0.001")),
    ),
    Case(
        "a class absent from validation with class-conditional sets",
        "--conformal.class_conditional: no validation example of surprise",
        lambda c: (fit(c, "--conformal.class_conditional", "true", data=validation_without(c, "surprise")), {}),
    ),
    # teachers (distillation)
    Case(
        "teacher not registered",
        "--model.teacher models:/no-such-teacher@champion: no registered model 'no-such-teacher'",
        plain(lambda c: fit(c, "--model.teacher", "[models:/no-such-teacher@champion]")),
    ),
    Case(
        "teacher not a model",
        "--model.teacher not-a-run: name a model as models:/NAME@ALIAS",
        plain(lambda c: fit(c, "--model.teacher", "[not-a-run]")),
    ),
    # training
    Case(
        "loss becomes NaN",
        "the training loss became nan",
        plain(lambda c: fit(c, "--optimizer.lr", "1e30")),
        runs_left=1,
    ),
]


# A case of every kind of input (and of both exit statuses), run as real processes by the tests.
ONE_OF_EVERY_KIND = (
    "wrong type",  # a value on the command line
    "a setting given none of its types",
    "unreadable YAML",  # a config file
    "trainer value Lightning refuses",  # a value that parses, refused by what uses it
    "trainer value Lightning refuses mid-fit",  # a value that can be checked only once the data is read
    "not UTF-8",  # data files
    "model folder without weights",  # model folders
    "not a checkpoint",  # checkpoints
    "checkpoint of another model",  # a checkpoint that loads, of other weights
    "subset smaller than the classes",  # a setting checked against the data
    "no training text left without the leaks",  # the same, with names given: found before the trainer's lines
    "predict file empty",  # predict files
    "server not running",  # tracking
    "sweep storage not a URL",  # sweeps
    "sync of a folder that is not there",  # sync
    "report by a test metric",  # report
    "teacher not a model",  # teachers
    "loss becomes NaN",  # training itself
)


def foreign_checkpoint(ctx: Context) -> Path:
    """A Lightning checkpoint whose weights belong to another model."""
    import torch

    path = ctx.folder / "other-model.ckpt"
    torch.save({"state_dict": {"model.other.weight": torch.zeros(2, 2)}, "pytorch-lightning_version": "2.6.6"}, path)
    return path
