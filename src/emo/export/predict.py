"""`emo predict --ckpt_path models:/NAME-onnx/VERSION`: an exported (ONNX) version labels a text file without torch.

The same command line as `emo predict` (config files, `--data.predict_file`, `--prediction.output_file`,
`--data.eval_batch_size`; settings for the model and the trainer do not apply and are ignored) and the same CSV:
`text,label,p_<label>...` in the file's order, the labels those the model was exported with.
"""

import csv
import os
import tempfile
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException

from emo import UsageError, UserError
from emo.export.served import BATCH_SIZE, GRAPH_FILE, OnnxTextClassifier
from emo.spec import EXPORT_SOURCE_TAG
from emo.store import registered_version, resolve_tracking_uri

DEFAULT_OUTPUT = "predictions.csv"  # as emo.predict.PredictionWriter's


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


def merge(into: dict, settings: dict) -> dict:
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def settings(args: list[str]) -> dict:
    """The settings the command line gives: config files merged left to right, then `--section.key value` options."""
    found: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        value = args[i + 1] if "=" not in arg and i + 1 < len(args) else None
        key, value = arg.split("=", 1) if "=" in arg else (arg, value)
        if key in ("--config", "-c") and value is not None:
            path = Path(value)
            if not path.is_file():
                raise UsageError(f"--config {value}: no such file")
            merge(found, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        elif key.startswith("--") and "." in key and value is not None:
            section, name = key[2:].split(".", 1)
            merge(found, {section: {name: yaml.safe_load(value) if value else value}})
        i += 1 if "=" in arg else 2
    return found


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


def predict(args: list[str], model_uri: str) -> None:
    """`emo predict` with the exported version `model_uri` (`args` as `emo predict` takes them)."""
    given = settings(args[1:])
    data, output = given.get("data") or {}, (given.get("prediction") or {}).get("output_file") or DEFAULT_OUTPUT
    texts = read_texts(data.get("predict_file"))
    with tempfile.TemporaryDirectory(prefix="emo-onnx-") as folder:
        model = load(model_uri, folder)
    print(f"Using registered ONNX model {model_uri} (onnxruntime, no torch)")
    probabilities = model.probabilities(texts, batch_size=int(data.get("eval_batch_size") or BATCH_SIZE)).tolist()
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label", *(f"p_{label}" for label in model.labels)])
        for text, p in zip(texts, probabilities, strict=True):
            writer.writerow([text, model.labels[max(range(len(p)), key=p.__getitem__)], *(f"{x:.5f}" for x in p)])
    print(f"Wrote {len(texts)} predictions to {path}")
