"""`python -m emo export`: a registered model as an ONNX graph with its tokenizer, checked against its source on the
test split, logged as an MLflow model that `mlflow models serve` serves, and registered as `NAME-onnx`.

    python -m emo export --model models:/NAME/VERSION        (or models:/NAME@ALIAS; int8 by default)
    python -m emo export --model models:/NAME@champion --quantize none     (fp32)

Everything is checked before a run exists: the model (a registered emo model: MLflow's transformers flavor,
text classification), the test split, and the parity of the export. An export that loses more than its kind may
(`emo.export.parity`) is one line and no run, unless `--force`. Then a top-label map (`emo.calibration`) is
fitted on the export's own probabilities of the validation split and served with it: it calibrates what one
temperature left (docs/serving.md); the parity is the export's before the map. The export run is in the source
run's experiment; its params are the settings, its metrics the parity and the map's figures; the version's tags
name the source.
"""

import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import mlflow
import numpy as np
from jsonargparse import auto_cli

from emo import UserError, conformal
from emo.arguments import OneLineParser
from emo.calibration import calibration_scores, fit_top_label_map, reliability_figure
from emo.export.parity import Parity, split_examples
from emo.export.served import (
    GRAPH_FILE,
    PREDICTION_SETS,
    SETTINGS_FILE,
    TOP_LABEL_MAP,
    OnnxTextClassifier,
    top_label_calibrated,
)
from emo.spec import (
    EXPORT_SOURCE_RUN_TAG,
    EXPORT_SOURCE_TAG,
    QUANTIZE_TAG,
    RELIABILITY_ARTIFACT,
    TEMPERATURE_TAG,
    TOP_LABEL_MAP_TAG,
)
from emo.store import is_registered_model_uri, model_source, resolve_tracking_uri
from emo.store.registry import INPUT_EXAMPLE, download_model, tracking_store

SERVED_CODE = Path(__file__).with_name("served.py")
SETS_CODE = Path(conformal.__file__)  # numpy only: logged with the served code
DEFAULT_MAX_LENGTH = 128
MAP_EXAMPLES = 1000  # the fewest validation examples a top-label map is fitted on: on fewer it learns their noise


def export(
    *,
    model: str,
    quantize: Literal["int8", "none"] = "int8",
    data_dir: str | None = None,
    force: bool = False,
    registered_model_name: str | None = None,
    top_label_map: bool = True,
) -> None:
    """Export a registered model to ONNX and register it as the next version of NAME-onnx.

    Args:
        model: The registered model: models:/NAME/VERSION or models:/NAME@ALIAS.
        quantize: int8 (dynamic quantization of the weights) or none (fp32).
        data_dir: The folder with the test split for the parity check; default: the source run's data.data_dir.
        force: Register even if the export loses more than it may (int8: 0.5 points of accuracy; fp32: 1e-3).
        registered_model_name: Register as this name; default NAME-onnx.
        top_label_map: Fit a map of the top probability on the validation split (at least 1000 examples, the test
            split's folder) and serve through it; the predicted labels are unchanged. False: the source's probabilities.
    """
    if not is_registered_model_uri(model):
        raise UserError(f"--model {model}: name a registered model as models:/NAME@ALIAS or models:/NAME/VERSION")
    tracking_uri = resolve_tracking_uri()
    source = model_source(model, tracking_uri)
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    run, version = client.get_run(source.run_id), client.get_model_version(source.name, source.version)
    if EXPORT_SOURCE_TAG in version.tags:
        raise UserError(
            f"--model {model}: already an ONNX export (of {version.tags[EXPORT_SOURCE_TAG]}); export its source"
        )
    test_dir = test_folder(data_dir, run.data.params)
    settings = {
        "source": source.pinned,
        "quantize": quantize,
        "max_length": int(run.data.params.get("data.max_length", DEFAULT_MAX_LENGTH)),
        "data_dir": str(test_dir),
        "top_label_map": top_label_map,
    }
    name = registered_model_name or f"{source.name}-onnx"
    with tempfile.TemporaryDirectory(prefix="emo-export-") as folder:
        folder = Path(folder)
        model_dir, tokenizer_dir = download_model(source, tracking_uri, folder / "source")
        print(f"Exporting {source.pinned} (run {source.run_id}) to ONNX, {'int8' if quantize == 'int8' else 'fp32'}")
        graph, bundle, labels, source_probabilities, texts, ids = build(
            model_dir, tokenizer_dir, folder, quantize, settings["max_length"], test_dir
        )
        classifier = OnnxTextClassifier().load(graph, bundle)
        exported = classifier.probabilities(texts)
        parity = Parity.of(ids, source_probabilities, exported)
        print(f"Parity {parity.summary()}")
        problem = parity.shortfall(quantize)
        if problem and not force:
            raise UserError(f"{problem}; not registered (--force registers it anyway)")
        if problem:
            print(f"emo: warning: {problem}; registered anyway (--force)", file=sys.stderr)
        mapped, diagram = (
            fit_served_map(classifier, bundle, test_dir, labels, exported, ids) if top_label_map else ({}, None)
        )
        built = Export(source, version, graph, bundle, settings, parity, mapped, diagram)
        with tracking_store(tracking_uri):
            run_id, model_uri = log_export(run.info.experiment_id, built)
            registered = register_export(built, model_uri, run_id, name)
    print(f"Registered {name!r} version {registered.version} ({parity.summary()}): models:/{name}/{registered.version}")


def test_folder(data_dir: str | None, params: dict) -> Path:
    """The folder with the test split: `--data_dir`, else the source run's `data.data_dir` where it is here."""
    given = data_dir or params.get("data.data_dir")
    if not given or not Path(given).is_dir():
        raise UserError(
            f"--data_dir {given or ''}: no folder with the test split "
            "(the source run's data.data_dir is not here); give one with --data_dir"
        )
    return Path(given)


def build(model_dir: Path, tokenizer_dir: Path, folder: Path, quantize: str, max_length: int, test_dir: Path):
    """The graph (quantized or not), the tokenizer folder the served model reads, and the source's test predictions."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from emo.export.graph import export_graph, quantize_int8
    from emo.inference import text_probabilities

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    texts, ids = split_examples(test_dir, {label: i for i, label in enumerate(labels)})
    bundle = folder / "tokenizer"
    tokenizer.save_pretrained(bundle)
    settings = {
        "labels": labels,
        "max_length": max_length,
        "pad_id": tokenizer.pad_token_id,
        "pad_token": tokenizer.pad_token,
        **({PREDICTION_SETS: model.config.prediction_sets} if getattr(model.config, PREDICTION_SETS, None) else {}),
    }
    (bundle / SETTINGS_FILE).write_text(json.dumps(settings, indent=1) + "\n")
    (folder / "fp32").mkdir()
    graph = export_graph(model, tokenizer, folder / "fp32" / GRAPH_FILE)
    if quantize == "int8":
        (folder / "int8").mkdir()
        graph = quantize_int8(graph, folder / "int8" / GRAPH_FILE)
    return graph, bundle, labels, text_probabilities(model, tokenizer, texts, max_length).numpy(), texts, ids


def fit_served_map(classifier, bundle: Path, data_dir: Path, labels, test: np.ndarray, test_ids):
    """Fits the top-label map on the export's probabilities of the validation split and adds it to the served
    settings in `bundle`. Returns the validation examples and the ECE and NLL before and after the map on
    validation and test, and the test's reliability diagram after it; ({}, None) and one line why when there is no
    validation split of `MAP_EXAMPLES` or more."""
    from emo.data import DataFormatError

    try:
        texts, ids = split_examples(data_dir, {label: i for i, label in enumerate(labels)}, "validation")
    except DataFormatError as error:  # none, or several files for it
        print(f"No top-label map: {error}; served with the source's probabilities")
        return {}, None
    if len(texts) < MAP_EXAMPLES:
        print(
            f"No top-label map: {len(texts)} validation examples in {data_dir}, fewer than {MAP_EXAMPLES} "
            "(it would learn their noise); served with the source's probabilities"
        )
        return {}, None
    validation = classifier.probabilities(texts, calibrated=False)
    classifier.top_label_map = fit_top_label_map(validation, ids)
    settings_file = bundle / SETTINGS_FILE
    settings = json.loads(settings_file.read_text()) | {TOP_LABEL_MAP: classifier.top_label_map}
    settings_file.write_text(json.dumps(settings, indent=1) + "\n")
    figures = {"top_label_map/examples": float(len(texts))}
    for split, probabilities, truth in (("val", validation, ids), ("test", test, test_ids)):
        after = top_label_calibrated(probabilities, **classifier.top_label_map)  # the test's is last: the diagram's
        for when, p in (("before", probabilities), ("after", after)):
            figures |= {f"top_label_map/{split}_{when}_{k}": v for k, v in calibration_scores(p, truth).items()}
    print(
        f"Top-label map fitted on {len(texts)} validation examples: test ECE {figures['top_label_map/test_before_ece']:.4f}"
        f" -> {figures['top_label_map/test_after_ece']:.4f} (validation {figures['top_label_map/val_before_ece']:.4f}"
        f" -> {figures['top_label_map/val_after_ece']:.4f})"
    )
    return figures, reliability_figure(after, test_ids, title="test, through the top-label map")


def requirements() -> list[str]:
    import importlib.metadata

    return [
        f"{name}=={importlib.metadata.version(name)}"
        for name in ("mlflow", "onnxruntime", "tokenizers", "numpy", "pandas")
    ]


@dataclasses.dataclass(frozen=True)
class Export:
    """What an export made, before it is logged: its registered `source` (and that `version`), the `graph` file and
    the tokenizer `bundle` the served code reads, the `settings` (its params), the `parity` with the source, and the
    top-label map's figures (`mapped`, empty without a map) and reliability `diagram`."""

    source: Any
    version: Any
    graph: Path
    bundle: Path
    settings: dict
    parity: Parity
    mapped: dict[str, float]
    diagram: Any

    @property
    def kind(self) -> str:
        return "int8" if self.settings["quantize"] == "int8" else "fp32"


def log_export(experiment_id: str, built: Export) -> tuple[str, str]:
    """The export run (params: settings; metrics: parity, the top-label map's figures) with the served model; its id
    and the model's URI."""
    run_name = f"export-{built.source.name}-v{built.source.version}-{built.kind}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags(
            {
                EXPORT_SOURCE_TAG: built.source.pinned,
                QUANTIZE_TAG: built.settings["quantize"],
                EXPORT_SOURCE_RUN_TAG: built.source.run_id,
            }
        )
        mlflow.log_params({f"export.{key}": value for key, value in built.settings.items()})
        mlflow.log_metrics(built.parity.metrics() | built.mapped)
        if built.diagram is not None:
            mlflow.log_figure(built.diagram, RELIABILITY_ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVED_CODE),
            artifacts={"model": str(built.graph), "tokenizer": str(built.bundle)},
            code_paths=[str(SETS_CODE)],  # the served code's prediction sets, imported beside it
            # no signature: the served code's type hints are one (texts in, one answer per text out), which spares
            # MLflow a DataFrame per call; a null or a number reaches the model, which refuses it with a message
            input_example=INPUT_EXAMPLE,
            pip_requirements=requirements(),
        )
    return run.info.run_id, info.model_uri


def register_export(built: Export, model_uri: str, run_id: str, name: str):
    """The logged export as the next version of `name`: tagged with its source, kind, parity, map and the source's
    temperature, and described in one paragraph."""
    registered = mlflow.register_model(model_uri, name)
    tags = {
        EXPORT_SOURCE_TAG: built.source.pinned,
        QUANTIZE_TAG: built.settings["quantize"],
        **{k: f"{v:.6g}" for k, v in built.parity.metrics().items()},
    }
    mapped = built.mapped
    if mapped:
        tags[TOP_LABEL_MAP_TAG] = str(int(mapped["top_label_map/examples"]))
        tags["top_label_map/test_after_ece"] = f"{mapped['top_label_map/test_after_ece']:.6g}"
    if TEMPERATURE_TAG in built.version.tags:
        tags[TEMPERATURE_TAG] = built.version.tags[TEMPERATURE_TAG]
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, registered.version, key, value)
    kind = "int8 (dynamic quantization)" if built.kind == "int8" else "fp32"
    description = (
        f"ONNX export ({kind}) of {built.source.pinned} by run {run_id}, served without torch by onnxruntime. "
        f"Parity {built.parity.summary()}."
    )
    if mapped:
        description += (
            f" Served through a top-label map fitted on {int(mapped['top_label_map/examples'])} validation "
            f"examples: test ECE {mapped['top_label_map/test_before_ece']:.4f} -> "
            f"{mapped['top_label_map/test_after_ece']:.4f}."
        )
    client.update_model_version(name, registered.version, description=description)
    return registered


def main(args=None) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    auto_cli(export, args=list(sys.argv[1:] if args is None else args), parser_class=OneLineParser)
