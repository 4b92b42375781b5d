"""`emo predict --ckpt_path models:/NAME-onnx/VERSION`: an exported (ONNX) version labels a text file without torch.

The same command line as `emo predict` (config files, `--data.predict_file`, `--prediction.output_file`,
`--data.eval_batch_size`; settings for the model and the trainer do not apply and are ignored) and the same CSV
(`emo.prediction_file`): the labels those the model was exported with, the sets where it carries them.
"""

import os
import tempfile
from pathlib import Path

import mlflow
import yaml
from jsonargparse import ActionConfigFile
from mlflow.exceptions import MlflowException

from emo import UserError
from emo.arguments import OneLineParser
from emo.export.served import BATCH_SIZE, GRAPH_FILE, OnnxTextClassifier
from emo.prediction_file import write_predictions
from emo.spec import EXPORT_SOURCE_TAG
from emo.store import registered_version, resolve_tracking_uri

DEFAULT_OUTPUT = "predictions.csv"  # as emo.fit.prediction.PredictionWriter's


def ckpt_path(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
    return None


def exported_version(args: list[str]) -> str | None:
    """`models:/NAME/VERSION` when `args` are `predict ... --ckpt_path models:/...` naming an ONNX export, else None.

    A registered model that cannot be found is left to the Lightning CLI, which says so in its own words."""
    given = ckpt_path(args)
    if not args or args[0] != "predict" or not (given or "").startswith("models:/"):
        return None
    try:
        version = registered_version(given, resolve_tracking_uri())
    except (UserError, MlflowException):
        return None
    return f"models:/{version.name}/{version.version}" if EXPORT_SOURCE_TAG in version.tags else None


def predict_settings(args: list[str]):
    """The command line as `emo predict` reads it (config files merged left to right, `--section.key value` over them),
    parsed by jsonargparse without the Lightning CLI's classes, which load torch: `data` and `prediction` as dicts,
    every other section the command line and its config files name as given (unused)."""
    parser = OneLineParser(prog="emo predict")
    parser.add_argument("--config", action=ActionConfigFile)
    names = {arg.split("=", 1)[0][2:] for arg in args if arg.startswith("--")} - {"config"}
    for flag, value in zip(args, args[1:], strict=False):
        if flag in ("--config", "-c") and Path(value).is_file():
            names |= set(yaml.safe_load(Path(value).read_text(encoding="utf-8")) or {})
    for name in sorted({name.split(".", 1)[0] for name in names} | set(USED_SECTIONS)):
        if name in USED_SECTIONS:
            parser.add_argument(f"--{name}", type=dict, default={})
        else:  # read, never used: a callable type, so that jsonargparse imports no class_path in it (torch)
            parser.add_argument(f"--{name}", type=as_given, default=None)
    return parser.parse_args(args)


USED_SECTIONS = ("data", "prediction")


def as_given(value):
    """A section `emo predict` of an export does not use, as given."""
    return value


def read_texts(predict_file: str | None) -> list[str]:
    """The stripped, non-blank lines of the predict file (as `emo predict` reads them)."""
    if not predict_file:
        raise UserError("predict needs --data.predict_file: a text file with one text a line")
    try:
        text = Path(predict_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{predict_file}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{predict_file}: not a text (UTF-8) file") from None
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:
        raise UserError(f"{predict_file}: no texts to predict (the file is empty or blank)")
    return texts


def load(model_uri: str, folder: str) -> OnnxTextClassifier:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    tracking_uri = resolve_tracking_uri()
    path = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=folder, tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
    )
    return OnnxTextClassifier().load(path / "artifacts" / GRAPH_FILE, path / "artifacts" / "tokenizer")


def main(args: list[str]) -> None:
    """`emo predict ARGS`: from an ONNX export here, without torch; from anything else, as `emo fit`'s CLI does."""
    exported = exported_version(args)
    if exported:
        return predict(args, exported)
    from emo.fit import main as lightning_main

    lightning_main(args)


def predict(args: list[str], model_uri: str) -> None:
    """`emo predict` with the exported version `model_uri` (`args` as `emo predict` takes them)."""
    given = predict_settings(args[1:])
    data, output = given.data, given.prediction.get("output_file") or DEFAULT_OUTPUT
    texts = read_texts(data.get("predict_file"))
    with tempfile.TemporaryDirectory(prefix="emo-onnx-") as folder:
        model = load(model_uri, folder)
    print(f"Using registered ONNX model {model_uri} (onnxruntime, no torch)")
    probabilities, sets = model.predictions(texts, batch_size=int(data.get("eval_batch_size") or BATCH_SIZE))
    write_predictions(output, texts, probabilities, model.labels, sets)
    print(f"Wrote {len(texts)} predictions to {output}")
