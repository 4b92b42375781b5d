"""`emo export`: a registered model as ONNX (fp32, int8), checked against its source on test, registered as
NAME-onnx, served by a real `mlflow models serve` with the transformers flavor's JSON, and read by `emo predict`
without torch; each bad input one line, no run left RUNNING."""

import csv
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest

from emo.calibration import expected_calibration_error, fit_top_label_map
from emo.export.parity import FP32_TOLERANCE, INT8_ACCURACY_LOSS
from emo.export.served import top_label_calibrated
from emo.store.registry import log_transformers_model, register, tracking_store
from helpers.data import DATA_DIR, ROOT
from helpers.processes import run_emo
from helpers.server import served_model
from helpers.serving import train_tiny_classifier

NAME = "emotion-export-test"
MAP_EXAMPLES = 1200  # the validation examples of the test exports' top-label map
TEXTS = ["i feel so happy and loved", "this makes me furious", "i am scared of the dark", "what a surprise to see you"]


def examples(data_dir: Path, split: str) -> tuple[list[str], list[str]]:
    rows = [line.rsplit(";", 1) for line in (data_dir / f"{split}.txt").read_text().splitlines() if line.strip()]
    return [text for text, _ in rows], [label for _, label in rows]


@pytest.fixture(scope="module")
def source(tiny_model_dir, small_data_dir, mlflow_server):
    """Version 1 of NAME: the tiny BERT trained for a few steps on the small data, logged and registered by emo.store.

    Its labels are the data's, in order of appearance: nothing here knows the six CARER names."""
    texts, labels = examples(small_data_dir, "train")
    names = list(dict.fromkeys(labels + examples(small_data_dir, "test")[1]))
    model, tokenizer = train_tiny_classifier(tiny_model_dir, texts, labels, names)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        # No process-wide MLflow state (set_experiment, set_tracking_uri) left for the tests after this one.
        client = mlflow.MlflowClient(mlflow_server)
        experiment = client.create_experiment("export-test")
        run = client.create_run(experiment)
        run_id = run.info.run_id
        client.log_param(run_id, "data.data_dir", str(small_data_dir))
        client.log_param(run_id, "data.max_length", 128)
        client.log_metric(run_id, "val/f1_weighted", 0.5)  # what `register` crowns a champion by
        with tracking_store(mlflow_server):
            log_transformers_model(run_id, model, tokenizer)
            version, _ = register(run_id, NAME)
        client.set_terminated(run_id)
        client.set_model_version_tag(NAME, version.version, "emo.temperature", "1.37")
    return model, tokenizer, names


def source_probabilities(source, texts: list[str]) -> np.ndarray:
    import torch

    model, tokenizer, _ = source
    with torch.inference_mode():
        batch = tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
        return model(**batch).logits.softmax(-1).numpy()


def export(tmp_path: Path, tracking_uri: str, *args: str) -> tuple[int, str]:
    """`python -m emo export ARGS` in its own process, from the project folder."""
    log = tmp_path / f"export-{len(list(tmp_path.glob('export-*.log')))}.log"
    return run_emo(["export", *args], log, env={"MLFLOW_TRACKING_URI": tracking_uri})


@pytest.fixture(scope="module")
def map_data(small_data_dir, tmp_path_factory) -> Path:
    """The small test split beside 1,200 real validation examples, enough for a top-label map."""
    data = tmp_path_factory.mktemp("map-data")
    validation = [line for line in (DATA_DIR / "val.txt").read_text().splitlines() if line.strip()][:MAP_EXAMPLES]
    (data / "val.txt").write_text("\n".join(validation) + "\n")
    (data / "test.txt").write_text((small_data_dir / "test.txt").read_text())
    return data


@pytest.fixture(scope="module")
def fp32(source, map_data, mlflow_server, tmp_path_factory):
    """Version 1 of NAME-onnx: the fp32 export, with a top-label map fitted on `map_data`'s validation split."""
    args = ["--model", f"models:/{NAME}/1", "--quantize", "none", "--data_dir", str(map_data)]
    code, output = export(tmp_path_factory.mktemp("fp32"), mlflow_server, *args)
    assert code == 0, output
    assert f"Registered '{NAME}-onnx' version 1" in output, output
    assert f"Top-label map fitted on {MAP_EXAMPLES} validation examples: test ECE" in output, output
    return mlflow.MlflowClient(mlflow_server).get_model_version(f"{NAME}-onnx", "1")


def top_label_mapped(source, data: Path, texts: list[str]) -> np.ndarray:
    """The source's probabilities of `texts` through a top-label map fitted on its own of the validation split."""
    _, _, names = source
    val_texts, val_labels = examples(data, "val")
    knots = fit_top_label_map(source_probabilities(source, val_texts), [names.index(n) for n in val_labels])
    return top_label_calibrated(source_probabilities(source, texts), **knots)


def test_an_fp32_export_matches_its_source_and_names_it(fp32, mlflow_server):
    client = mlflow.MlflowClient(mlflow_server)
    assert fp32.tags["emo.export.source"] == f"models:/{NAME}/1" and fp32.tags["emo.export.quantize"] == "none"
    assert fp32.tags["emo.temperature"] == "1.37"  # the calibrated source's temperature travels with it
    assert f"models:/{NAME}/1" in fp32.description and "Parity on 100 test examples" in fp32.description
    run = client.get_run(fp32.run_id)
    assert run.info.status == "FINISHED" and run.data.params["export.quantize"] == "none"
    metrics = run.data.metrics
    assert metrics["parity/max_abs_diff"] <= FP32_TOLERANCE  # the parity is the export's before the map
    assert metrics["parity/export_acc"] == metrics["parity/source_acc"]
    assert metrics["parity/export_f1_macro"] == metrics["parity/source_f1_macro"]
    assert metrics["parity/examples"] == 100


def test_an_export_is_calibrated_by_a_top_label_map_fitted_on_validation(source, fp32, map_data, mlflow_server):
    assert fp32.tags["emo.export.top_label_map"] == str(MAP_EXAMPLES) and "top-label map" in fp32.description
    client = mlflow.MlflowClient(mlflow_server)
    with tracking_store(mlflow_server):
        assert [f.path for f in client.list_artifacts(fp32.run_id, "test")] == ["test/reliability_diagram.png"]
    metrics = client.get_run(fp32.run_id).data.metrics
    assert metrics["top_label_map/examples"] == MAP_EXAMPLES
    _, _, names = source
    texts, names_given = examples(map_data, "test")
    labels = [names.index(name) for name in names_given]
    before, after = source_probabilities(source, texts), top_label_mapped(source, map_data, texts)
    assert np.abs(after - before).max() > 0.01  # the map moved the probabilities
    assert (after.argmax(axis=1) == before.argmax(axis=1)).all()
    for when, probabilities in (("before", before), ("after", after)):
        ece = expected_calibration_error(probabilities, labels)
        assert metrics[f"top_label_map/test_{when}_ece"] == pytest.approx(ece, abs=1e-3)


def test_an_int8_export_registers_within_its_stated_loss_or_says_so(source, fp32, mlflow_server, tmp_path):
    client = mlflow.MlflowClient(mlflow_server)
    code, output = export(tmp_path, mlflow_server, "--model", f"models:/{NAME}@champion")  # int8 by default
    if code != 0:  # refused: one line with the figures, and nothing registered
        errors = [line for line in output.splitlines() if line.startswith("emo: error:")]
        assert len(errors) == 1 and "points of accuracy" in errors[0] and "--force" in errors[0], output
        assert len(client.search_model_versions(f"name='{NAME}-onnx'")) == 1
        code, output = export(tmp_path, mlflow_server, "--model", f"models:/{NAME}@champion", "--force", "true")
        assert code == 0 and "registered anyway (--force)" in output, output
    int8 = client.get_model_version(f"{NAME}-onnx", "2")
    assert int8.tags["emo.export.quantize"] == "int8"
    # the source run's data: 100 validation examples, too few for a map
    assert "No top-label map: 100 validation examples" in output and "fewer than 1000" in output, output
    run = client.get_run(int8.run_id)
    assert run.data.params["export.top_label_map"] == "True" and "emo.export.top_label_map" not in int8.tags
    metrics = run.data.metrics
    assert "top_label_map/examples" not in metrics
    refused = metrics["parity/source_acc"] - metrics["parity/export_acc"] > INT8_ACCURACY_LOSS
    assert refused == ("--force" in output), metrics
    assert 0 < metrics["parity/max_abs_diff"] < 0.2, metrics  # quantized: close, not equal
    with tracking_store(mlflow_server):  # a logged model's artifacts resolve through MLflow's global store
        sizes = {
            v: sum(
                f.file_size or 0
                for f in client.list_artifacts(client.get_model_version(f"{NAME}-onnx", v).run_id, "model/artifacts")
            )
            for v in ("1", "2")
        }
    assert sizes["2"] < sizes["1"], sizes  # int8 weights


@pytest.fixture(scope="module")
def fragile(source, small_data_dir, mlflow_server, tmp_path_factory) -> Path:
    """Version 1 of NAME-fragile, the source with a head int8 cannot hold: in each class's row of weights one so large
    (the same in every row, so the fp32 model's predictions ignore it) that int8's scale for the row rounds the others
    to 0, where the predictions live. Returns a test split of 200 real texts labelled with its own predictions (it
    scores 100 %) and no validation split."""
    import copy

    import torch

    model, tokenizer, names = source
    model = copy.deepcopy(model)
    with torch.no_grad():
        weight = model.classifier.weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * 10)
        weight[:, 0] += 1e4
        model.classifier.bias.zero_()
    client = mlflow.MlflowClient(mlflow_server)
    run_id = client.create_run(client.get_experiment_by_name("export-test").experiment_id).info.run_id
    client.log_param(run_id, "data.max_length", 128)
    with tracking_store(mlflow_server):
        log_transformers_model(run_id, model, tokenizer)
        register(run_id, f"{NAME}-fragile")
    client.set_terminated(run_id)
    texts = examples(small_data_dir, "test")[0][:200]
    predicted = source_probabilities((model, tokenizer, names), texts).argmax(axis=1)
    data = tmp_path_factory.mktemp("fragile")
    (data / "test.txt").write_text("".join(f"{text};{names[c]}\n" for text, c in zip(texts, predicted, strict=True)))
    return data


def test_an_int8_export_that_loses_accuracy_is_refused_in_one_line_and_registered_only_when_forced(
    fp32, fragile, mlflow_server, tmp_path
):
    client = mlflow.MlflowClient(mlflow_server)
    versions = len(client.search_model_versions(f"name='{NAME}-onnx'"))
    args = [
        "--model",
        f"models:/{NAME}-fragile/1",
        "--data_dir",
        str(fragile),
        "--registered_model_name",
        f"{NAME}-ties",
    ]
    code, output = export(tmp_path, mlflow_server, *args)
    errors = [line for line in output.splitlines() if line.startswith("emo: error:")]
    assert code == 1 and len(errors) == 1, output
    assert "the int8 export loses" in errors[0] and "points of accuracy on test" in errors[0] and "--force" in errors[0]
    assert not client.search_model_versions(f"name='{NAME}-ties'")
    assert len(client.search_model_versions(f"name='{NAME}-onnx'")) == versions
    code, output = export(tmp_path, mlflow_server, *args, "--force", "true")
    assert code == 0 and "registered anyway (--force)" in output, output
    # and without a validation split: no map, one line why, the source's probabilities served
    assert "No top-label map:" in output and "no file for the validation split" in output, output
    [forced] = client.search_model_versions(f"name='{NAME}-ties'")
    metrics = client.get_run(forced.run_id).data.metrics
    assert metrics["parity/source_acc"] == 1 and 1 - metrics["parity/export_acc"] > INT8_ACCURACY_LOSS
    assert "emo.export.top_label_map" not in forced.tags and "top_label_map/examples" not in metrics


def test_an_export_without_a_top_label_map_serves_its_source_s_probabilities(
    source, fp32, map_data, mlflow_server, tmp_path, tracking_uri
):
    args = ["--model", f"models:/{NAME}/1", "--quantize", "none", "--data_dir", str(map_data),
            "--top_label_map", "false", "--registered_model_name", f"{NAME}-unmapped"]  # fmt: skip
    code, output = export(tmp_path, mlflow_server, *args)
    assert code == 0 and "Top-label map fitted" not in output, output
    version = mlflow.MlflowClient(mlflow_server).get_model_version(f"{NAME}-unmapped", "1")
    assert "emo.export.top_label_map" not in version.tags and "top-label map" not in version.description
    rows = predict_onnx(tmp_path, f"models:/{NAME}-unmapped/1", tracking_uri)
    _, _, names = source
    got = np.array([[float(row[f"p_{name}"]) for name in names] for row in rows])
    assert np.abs(got - source_probabilities(source, TEXTS)).max() < FP32_TOLERANCE  # not mapped
    assert np.abs(got - top_label_mapped(source, map_data, TEXTS)).max() > 0.01


def predict_onnx(tmp_path: Path, uri: str, tracking_uri: str) -> list[dict]:
    """`emo predict` from an ONNX version, in a process of its own that must not import torch."""
    texts, output = tmp_path / "texts.txt", tmp_path / "predictions.csv"
    texts.write_text("\n".join(TEXTS) + "\n\n")
    args = ["predict", "--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/offline.yaml"),
            "--ckpt_path", uri, "--data.predict_file", str(texts), f"--prediction.output_file={output}"]  # fmt: skip
    code = (
        "import sys\nfrom emo.commands import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
        "    assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Wrote {len(TEXTS)} predictions to {output}" in done.stdout
    return list(csv.DictReader(open(output)))


def test_emo_predict_reads_the_onnx_version_without_torch(source, fp32, map_data, tmp_path, tracking_uri):
    rows = predict_onnx(tmp_path, f"models:/{NAME}-onnx/1", tracking_uri)
    _, _, names = source
    assert list(rows[0]) == ["text", "label", *(f"p_{name}" for name in names)]  # the model's labels, in id order
    assert [row["text"] for row in rows] == TEXTS
    assert [row["label"] for row in rows] == [names[i] for i in source_probabilities(source, TEXTS).argmax(axis=1)]
    expected = top_label_mapped(source, map_data, TEXTS)  # through the export's map
    got = np.array([[float(row[f"p_{name}"]) for name in names] for row in rows])
    assert np.abs(got - expected).max() < FP32_TOLERANCE


def post(url: str, payload) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def process_tree(pid: int) -> list[int]:
    import psutil

    root = psutil.Process(pid)
    return [root.pid, *(child.pid for child in root.children(recursive=True))]


def test_the_onnx_export_serves_the_transformers_flavor_s_json_over_http(
    source, fp32, map_data, tmp_path, tracking_uri
):
    """Served as `emo predict` gives it: the source's probabilities through the export's map."""
    serving = served_model(f"models:/{NAME}-onnx/1", tmp_path / "serve.log", {"MLFLOW_TRACKING_URI": tracking_uri})
    with serving as (url, server):
        answers = {
            "texts": post(f"{url}/invocations", {"inputs": TEXTS}),
            "split": post(
                f"{url}/invocations", {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}
            ),
            "empty": post(f"{url}/invocations", {"inputs": []}),
            "null": post(f"{url}/invocations", {"inputs": ["a text", None]}),
            "number": post(f"{url}/invocations", {"inputs": ["a text", 3]}),
        }
        maps = "".join(Path(f"/proc/{pid}/maps").read_text() for pid in process_tree(server.pid))
    assert "libtorch" not in maps and "onnxruntime" in maps  # the served processes run onnxruntime, not torch
    _, _, names = source
    status, body = answers["texts"]
    assert status == 200, body
    served = body["predictions"]
    assert [set(row) for row in served] == [{"label", "score", *(f"p_{name}" for name in names)}] * len(TEXTS)
    expected = top_label_mapped(source, map_data, TEXTS)
    assert [row["label"] for row in served] == [names[i] for i in expected.argmax(axis=1)]
    assert [row["score"] for row in served] == pytest.approx(expected.max(axis=1), abs=FP32_TOLERANCE)
    assert [row[f"p_{name}"] for row in served for name in names] == pytest.approx(expected.ravel(), abs=FP32_TOLERANCE)
    # The served code's type hints are its signature (no DataFrame per call): MLflow's server then takes `inputs`
    # only, and says so; `emo serve` takes every format (tests/test_emo_serve.py)
    status, body = answers["split"]
    assert status == 400 and "with 'inputs' key when the model contains a valid type hint" in body["message"], body
    # MLflow's schema check (the signature: one text column) or the model's own, each with a message
    for case, needles in (
        ("empty", ("no texts", "only has 0 inputs")),
        ("null", ("input 1 is null, not a text",)),
        ("number", ("input 1 is int 3, not a text",)),
    ):
        status, body = answers[case]
        assert 400 <= status < 500 and any(n in body["message"] for n in needles), (case, status, body)


@pytest.mark.parametrize(("args", "status", "expected"), [
    (["--model", f"models:/{NAME}-onnx/1"], 1, "already an ONNX export (of models:/emotion-export-test/1)"),
    (["--model", "0123456789abcdef0123456789abcdef"], 1, "name a registered model as models:/NAME@ALIAS or models:/NAME/VERSION"),
    (["--model", f"models:/{NAME}/7"], 1, f"registered model '{NAME}' has no version 7 (latest: 1)"),
    (["--model", "models:/no-such-model@champion"], 1, "no registered model 'no-such-model'"),
    (["--model", f"models:/{NAME}/1", "--quantize", "int4"], 2, "--quantize: Expected a typing.Literal['int8', 'none']. Got value: int4"),
    (["--model", f"models:/{NAME}/1", "--data_dir", "/no/such/folder"], 1, "--data_dir /no/such/folder: no folder with the test split"),
], ids=["an-onnx-export", "a-run-id", "a-missing-version", "a-missing-model", "an-unknown-quantization", "no-test-data"])  # fmt: skip
def test_a_bad_export_is_one_line_and_leaves_no_run(args, status, expected, fp32, tmp_path, mlflow_server):
    client = mlflow.MlflowClient(mlflow_server)
    versions = len(client.search_model_versions(f"name='{NAME}-onnx'"))
    code, output = export(tmp_path, mlflow_server, *args)
    assert code == status, output
    errors = [line for line in output.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("emo: error: ") and expected in errors[0], output
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not client.search_runs(experiments, "attributes.status = 'RUNNING'")
    assert len(client.search_model_versions(f"name='{NAME}-onnx'")) == versions
