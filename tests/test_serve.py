"""A registered model, used by name: `emo predict --ckpt_path models:/NAME@ALIAS`, and `mlflow models serve` over HTTP."""

import csv
import json
import urllib.request
from pathlib import Path

import mlflow
import pytest

from emo.commands import main
from emo.data.fetch import CARER_LABELS
from emo.fit import EmoCLI
from helpers.data import shrunk_args
from helpers.processes import run_emo
from helpers.server import served_model

NAME = "emotion-serve-test"
TEXTS = ["i feel so happy and loved", "this makes me furious", "i am scared of the dark", "what a surprise to see you"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_model_dir, small_data_dir, mlflow_server):
    """One short fit that registers version 1 of NAME as its champion; returns its best checkpoint file."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        tmp_path = tmp_path_factory.mktemp("fit")
        cli = EmoCLI(args=["fit", *shrunk_args(tmp_path, tiny_model_dir, small_data_dir,
                                               "--trainer.logger.init_args.experiment_name", "serve-test",
                                               "--registry.registered_model_name", NAME,
                                               "--optimizer.lr", "5e-3", "--trainer.max_epochs", "1")])  # fmt: skip
    assert mlflow.MlflowClient(mlflow_server).get_model_version_by_alias(NAME, "champion").version == "1"
    return cli


def emo_args(tmp_path: Path, tiny_model_dir, small_data_dir, ckpt_path: str) -> list[str]:
    # 32-true: the served model computes in fp32 too, so probabilities agree to rounding
    return shrunk_args(
        tmp_path, tiny_model_dir, small_data_dir, "--ckpt_path", ckpt_path, "--trainer.precision", "32-true"
    )


def predict(tmp_path: Path, tiny_model_dir, data_dir, ckpt_path: str) -> list[dict]:
    """`emo predict` on TEXTS: one row a text, `text,label,p_<label>...`."""
    texts, output = tmp_path / "texts.txt", tmp_path / f"predictions-{len(list(tmp_path.glob('*.csv')))}.csv"
    texts.write_text("\n".join(TEXTS) + "\n")
    EmoCLI(
        args=[
            "predict",
            *emo_args(tmp_path, tiny_model_dir, data_dir, ckpt_path),
            "--data.predict_file",
            str(texts),
            "--prediction.output_file",
            str(output),
        ]
    )
    return list(csv.DictReader(open(output)))


def probabilities(rows: list[dict]) -> list[float]:
    return [float(row[f"p_{label}"]) for row in rows for label in CARER_LABELS]


def test_a_kept_checkpoint_predicts_what_its_registered_model_predicts(
    fitted, tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    """The fit's calibration travels in its kept checkpoint: loaded to predict, it is the registered model."""
    from_checkpoint = predict(
        tmp_path, tiny_model_dir, small_data_dir, fitted.trainer.checkpoint_callback.best_model_path
    )
    for uri in (f"models:/{NAME}@champion", f"models:/{NAME}/1"):
        rows = predict(tmp_path, tiny_model_dir, tmp_path / "no-training-data-here", uri)  # predict needs none
        assert [row["text"] for row in rows] == TEXTS
        assert [row["label"] for row in rows] == [row["label"] for row in from_checkpoint], uri
        # the registered head and encoder, not new random ones, with the temperature folded in
        assert probabilities(rows) == pytest.approx(probabilities(from_checkpoint), abs=1e-4), uri
        assert [row["set"] for row in rows] == [row["set"] for row in from_checkpoint], uri


def test_prediction_sets_are_the_same_from_the_checkpoint_the_registered_model_its_export_and_the_served_export(
    fitted, tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    from_checkpoint = predict(
        tmp_path, tiny_model_dir, small_data_dir, fitted.trainer.checkpoint_callback.best_model_path
    )
    sets = [row["set"] for row in from_checkpoint]
    code, output = run_emo(
        ["export", "--model", f"models:/{NAME}/1", "--quantize", "none", "--data_dir", str(small_data_dir)],
        tmp_path / "export.log",
        env={"MLFLOW_TRACKING_URI": tracking_uri},
    )
    assert code == 0, output
    exported = predict_export(tmp_path, f"models:/{NAME}-onnx/1", tracking_uri)
    assert [row["set"] for row in exported] == sets
    client = mlflow.MlflowClient()
    run = client.get_run(fitted.trainer.logger.run_id)
    assert client.get_model_version(NAME, "1").tags["emo.prediction_sets"] == run.data.tags["emo.prediction_sets"]
    serving = served_model(f"models:/{NAME}-onnx/1", tmp_path / "serve.log", {"MLFLOW_TRACKING_URI": tracking_uri})
    with serving as (url, _):  # MLflow runs the export's logged code, and the sets' code logged beside it
        served = post_json(f"{url}/invocations", {"inputs": TEXTS})["predictions"]
    assert ["|".join(row["set"]) for row in served] == sets


def predict_export(tmp_path: Path, uri: str, tracking_uri: str) -> list[dict]:
    """`emo predict` from an ONNX export, in its own process."""
    texts, output = tmp_path / "texts.txt", tmp_path / "export-predictions.csv"
    texts.write_text("\n".join(TEXTS) + "\n")
    code, printed = run_emo(
        ["predict", "--ckpt_path", uri, "--data.predict_file", str(texts), "--prediction.output_file", str(output)],
        tmp_path / "predict-export.log",
        env={"MLFLOW_TRACKING_URI": tracking_uri},
    )
    assert code == 0, printed
    return list(csv.DictReader(open(output)))


@pytest.mark.parametrize("subcommand", ["test", "validate"])
def test_a_registered_model_uri_repeats_the_fit_s_scores(
    subcommand, fitted, tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    """The registered model scores what the fit's best checkpoint scored (same precision), in a run that names it."""
    uri, stage = f"models:/{NAME}@champion", "test" if subcommand == "test" else "val"
    cli = EmoCLI(
        args=[
            subcommand,
            *shrunk_args(
                tmp_path,
                tiny_model_dir,
                small_data_dir,
                "--trainer.logger.init_args.experiment_name",
                "serve-test",
                "--ckpt_path",
                uri,
            ),
        ]
    )
    client = mlflow.MlflowClient()
    run = client.get_run(fitted.trainer.logger.run_id)  # one epoch: its last validation is the kept checkpoint's
    for metric in (f"{stage}/acc", f"{stage}/f1_weighted"):
        assert cli.trainer.callback_metrics[metric].item() == pytest.approx(run.data.metrics[metric], abs=1e-5), metric
    # The registered model is calibrated: its loss is the fit's after temperature scaling (the fit's test ran
    # calibrated already), far nearer it than the raw model's. Under bf16 autocast (where the CPU has bf16 units) the
    # head with T folded in rounds otherwise than logits / T: the mean loss moves in its 4th digit.
    after = run.data.metrics["test/loss" if stage == "test" else "calibration/val_after_nll"]
    before = run.data.metrics[f"calibration/{stage}_before_nll"]
    loss = cli.trainer.callback_metrics[f"{stage}/loss"].item()
    assert loss == pytest.approx(after, rel=1e-3) and abs(loss - after) < abs(loss - before) / 4
    assert (
        client.get_run(cli.trainer.logger.run_id).data.tags["emo.model"] == uri
    )  # not the download's temporary folder


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"models:/{NAME}@nope", f"registered model '{NAME}' has no alias 'nope' (its aliases: champion (version 1))"),
        ("models:/no-such-model@champion", "no registered model 'no-such-model' in http://127.0.0.1:"),
        (f"models:/{NAME}/7", f"registered model '{NAME}' has no version 7 (latest: 1)"),
        (f"models:/{NAME}", "name a registered model as models:/NAME@ALIAS or models:/NAME/VERSION"),
    ],
    ids=["alias", "model", "version", "malformed"],
)
def test_a_missing_registered_model_is_one_line(
    uri, expected, fitted, tmp_path, tiny_model_dir, small_data_dir, tracking_uri, capsys
):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    with pytest.raises(SystemExit) as stopped:
        main(["predict", *emo_args(tmp_path, tiny_model_dir, small_data_dir, uri), "--data.predict_file", str(texts)])
    assert stopped.value.code == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1, errors  # the only output: stopped before anything loads
    assert errors[0].startswith(f"emo: error: {uri}: ") and expected in errors[0], errors[0]


def post_json(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_the_champion_serves_over_http(fitted, tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    serving = served_model(f"models:/{NAME}@champion", tmp_path / "serve.log", {"MLFLOW_TRACKING_URI": tracking_uri})
    with serving as (url, _):
        served = post_json(f"{url}/invocations", {"inputs": TEXTS})["predictions"]
    assert len(served) == len(TEXTS) and all(set(row) == {"label", "score"} for row in served), served
    assert {row["label"] for row in served} <= set(CARER_LABELS)
    rows = predict(tmp_path, tiny_model_dir, small_data_dir, f"models:/{NAME}@champion")
    assert [row["label"] for row in served] == [row["label"] for row in rows]
    assert [row["score"] for row in served] == pytest.approx(
        [float(row[f"p_{row['label']}"]) for row in rows], abs=1e-4
    )
