"""End to end against a real MLflow server: fit, test on the best checkpoint, log, register, predict."""

import csv
import json
import math
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from emo.calibration import log_probabilities, scaled_probabilities
from emo.conformal import fit_sets
from emo.data.fetch import CARER_LABELS
from emo.fit import EmoCLI
from emo.spec import MODEL_URI_TAG
from helpers.data import ROOT, SMALL_SIZES, shrunk_args


def fit(tmp_path, tiny_model_dir, small_data_dir, experiment: str, model_name: str, *extra: str) -> EmoCLI:
    return EmoCLI(args=["fit", *shrunk_args(tmp_path, tiny_model_dir, small_data_dir,
                                            "--trainer.logger.init_args.experiment_name", experiment,
                                            "--registry.registered_model_name", model_name,
                                            "--optimizer.lr", "5e-3", *extra)])  # fmt: skip


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_model_dir, small_data_dir, mlflow_server):
    """One short fit shared by the tests below."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        tmp_path = tmp_path_factory.mktemp("fit")
        cli = fit(
            tmp_path,
            tiny_model_dir,
            small_data_dir,
            "pipeline-test",
            "emotion-pipeline-test",
            "--trainer.logger.init_args.system_metrics_interval_s",
            "0.5",
        )
    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run(cli.trainer.logger.run_id)
    return cli, client, run


def test_run_holds_every_setting_as_a_param(fitted):
    cli, _, run = fitted
    params = run.data.params
    assert params["optimizer.init_args.lr"] == "0.005"
    assert (
        params["optimizer.class_path"] == "torch.optim.AdamW" and params["optimizer.init_args.weight_decay"] == "0.01"
    )
    assert params["lr_scheduler.class_path"] == "emo.optim.LinearWarmupDecay"
    assert params["lr_scheduler.init_args.warmup_ratio"] == "0.1" and "model.optimizer.class_path" not in params
    assert params["data.batch_size"] == "16" and params["data.max_length"] == "128"
    assert params["trainer.max_epochs"] == "2" and params["seed_everything"] == "42"
    assert params["checkpoint.monitor"] == "val/f1_weighted"
    assert params["data.tokenizer_name_or_path"] == params["model.model_name_or_path"]


def test_run_tags_say_what_was_trained_on_what(fitted, small_data_dir):
    cli, _, run = fitted
    tags = run.data.tags
    assert tags["emo.task"] == "text-classification"
    assert tags["emo.dataset"] == str(small_data_dir)
    assert tags["emo.data_digest"] == cli.datamodule.data_digest and len(tags["emo.data_digest"]) == 64
    assert tags["emo.model"] == cli.model.hparams.model_name_or_path
    assert len(tags["mlflow.source.git.commit"]) == 40
    contexts = {i.tags[0].value: i.dataset.profile for i in run.inputs.dataset_inputs}
    assert set(contexts) == {"train", "validation", "test"}
    assert json.loads(contexts["train"])["num_rows"] == SMALL_SIZES["train"]


def test_a_model_training_experiment_with_system_metrics(fitted):
    _, client, run = fitted
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    memory = client.get_metric_history(run.info.run_id, "system/system_memory_usage_megabytes")
    assert cpu and memory and all(0 <= m.value <= 100 * 64 for m in cpu) and all(m.value > 0 for m in memory)


def test_metrics_per_step_per_epoch_and_of_the_best_checkpoint(fitted):
    cli, client, run = fitted
    metrics = run.data.metrics
    for name in (
        "val/loss",
        "val/acc",
        "val/f1_weighted",
        "val/f1_macro",
        "val/f1_joy",
        "test/loss",
        "test/acc",
        "test/f1_weighted",
        "test/f1_macro",
        "test/f1_surprise",
        "train/samples_per_sec",
    ):
        assert name in metrics, name
    steps_per_epoch = SMALL_SIZES["train"] // 16 + 1
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2 * steps_per_epoch // 5
    assert len(client.get_metric_history(run.info.run_id, "val/f1_weighted")) == 2  # one per epoch
    best = cli.trainer.checkpoint_callback.best_model_score.item()
    assert best == pytest.approx(max(m.value for m in client.get_metric_history(run.info.run_id, "val/f1_weighted")))


def test_test_split_is_the_test_file(fitted):
    _, client, run = fitted
    report = json.loads(open(client.download_artifacts(run.info.run_id, "test/per_class_report.json")).read())
    assert sum(row["support"] for row in report.values()) == SMALL_SIZES["test"]
    summary = json.loads(open(client.download_artifacts(run.info.run_id, "summary.json")).read())
    assert summary["examples"] == {"train": 300, "validation": 100, "test": 100}
    assert summary["test"]["test/f1_weighted"] == pytest.approx(run.data.metrics["test/f1_weighted"], abs=1e-5)
    assert summary["best_checkpoint"].endswith(".ckpt") and summary["train_samples_per_sec"] > 0


def test_artifacts(fitted):
    _, client, run = fitted
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    paths |= {a.path for a in client.list_artifacts(run.info.run_id, "test")}
    assert {"config.yaml", "summary.json", "test/confusion_matrix.png", "test/per_class_report.md"} <= paths
    checkpoint_dirs = [p for p in paths if p.startswith("best-epoch")]
    assert len(checkpoint_dirs) == 1
    config = client.download_artifacts(run.info.run_id, "config.yaml")
    assert "lr: 0.005" in open(config).read()
    png = open(client.download_artifacts(run.info.run_id, "test/confusion_matrix.png"), "rb").read()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_test_predictions_and_error_analysis(fitted, small_data_dir):
    cli, client, run = fitted
    rows = list(csv.DictReader(open(client.download_artifacts(run.info.run_id, "test/predictions.csv"))))
    lines = [line.rsplit(";", 1) for line in (small_data_dir / "test.txt").read_text().splitlines()]
    assert [(row["text"], row["label"]) for row in rows] == [(text, label) for text, label in lines]  # the file's order
    assert [int(row["example"]) for row in rows] == list(range(len(lines)))
    for row in rows:
        probabilities = {label: float(row[f"p_{label}"]) for label in CARER_LABELS}
        assert row["predicted"] == max(probabilities, key=probabilities.get)
        assert float(row["confidence"]) == pytest.approx(max(probabilities.values()), abs=1e-5)
    accuracy = sum(row["predicted"] == row["label"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(run.data.metrics["test/acc"], abs=1e-6)  # the same test as the metrics
    mistakes = open(client.download_artifacts(run.info.run_id, "test/confident_mistakes.md")).read().splitlines()[2:]
    wrong = sorted((float(r["confidence"]) for r in rows if r["predicted"] != r["label"]), reverse=True)
    assert [float(line.rsplit("|", 2)[1]) for line in mistakes] == pytest.approx(wrong[:30], abs=1e-3)
    for figure in ("test/confusion_matrix_normalised.png", "test/f1_per_class.png"):
        assert open(client.download_artifacts(run.info.run_id, figure), "rb").read().startswith(b"\x89PNG")
    description = run.data.tags["mlflow.note.content"]
    assert f"accuracy **{run.data.metrics['test/acc']:.4f}**" in description and "Best checkpoint: epoch" in description


def test_validation_predictions_are_those_of_the_kept_checkpoint(fitted, small_data_dir):
    _, client, run = fitted
    rows = list(csv.DictReader(open(client.download_artifacts(run.info.run_id, "val/predictions.csv"))))
    lines = [line.rsplit(";", 1) for line in (small_data_dir / "val.txt").read_text().splitlines()]
    assert [(row["text"], row["label"]) for row in rows] == [(text, label) for text, label in lines]
    history = {
        name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"val/{name}")}
        for name in ("f1_weighted", "acc", "loss")
    }
    f1, loss = history["f1_weighted"], history["loss"]
    assert len(loss) == 2 and len(set(loss.values())) == 2  # two epochs, told apart by their validation loss
    kept = max(sorted(f1), key=f1.get)  # the first best step, as ModelCheckpoint keeps it (a tie keeps the first)
    truth, predicted = [row["label"] for row in rows], [row["predicted"] for row in rows]
    assert f1_score(truth, predicted, average="weighted") == pytest.approx(f1[kept], abs=1e-6)
    assert accuracy_score(truth, predicted) == pytest.approx(history["acc"][kept], abs=1e-6)
    log_loss = -sum(math.log(float(row[f"p_{row['label']}"])) for row in rows) / len(rows)
    assert log_loss == pytest.approx(loss[kept], rel=1e-3)


def test_registered_champion_predicts_a_label(fitted, tracking_uri):
    cli, client, run = fitted
    version = client.get_model_version_by_alias("emotion-pipeline-test", "champion")
    assert version.run_id == run.info.run_id
    description = version.description  # what it was trained on, readable in the registry
    assert f"fine-tuned for text classification on {cli.datamodule.source}" in description
    assert run.info.run_id in description and f"accuracy {run.data.metrics['test/acc']:.4f}" in description
    model = mlflow.pyfunc.load_model("models:/emotion-pipeline-test@champion")
    prediction = model.predict(["i can't stop smiling today"])
    assert prediction["label"][0] in CARER_LABELS and 0 < prediction["score"][0] <= 1


def test_predict_writes_labels_and_probabilities(fitted, tmp_path, tiny_model_dir, small_data_dir):
    cli, _, _ = fitted
    lines = ["i feel so happy and loved", "this makes me furious", "i am scared", "what a surprise it was to see you"]

    def predict(order: list[str]) -> list[dict]:
        texts, output = tmp_path / "texts.txt", tmp_path / "predictions.csv"
        texts.write_text("\n".join(order) + "\n")
        EmoCLI(args=["predict", *shrunk_args(tmp_path, tiny_model_dir, small_data_dir),
                     "--ckpt_path", cli.trainer.checkpoint_callback.best_model_path, "--data.eval_batch_size", "2",
                     "--data.predict_file", str(texts), "--prediction.output_file", str(output)])  # fmt: skip
        return list(csv.DictReader(open(output)))

    rows = predict(lines)
    assert [row["text"] for row in rows] == lines  # the file's order, although batches run sorted by length
    for row in rows:
        probabilities = {label: float(row[f"p_{label}"]) for label in CARER_LABELS}
        assert row["label"] == max(probabilities, key=probabilities.get)
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-3)
    reversed_rows = predict(lines[::-1])  # each text keeps its own probabilities, whatever its place in the file
    assert [row["text"] for row in reversed_rows] == lines[::-1]
    assert {row["text"]: row for row in reversed_rows} == {row["text"]: row for row in rows}


def test_another_optimizer_and_schedule_are_settings_and_the_run_names_them(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    cli = fit(tmp_path, tiny_model_dir, small_data_dir, "sgd-test", "", "--trainer.max_epochs", "1",
              "--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.05", "--optimizer.momentum", "0.9",
              "--lr_scheduler", "torch.optim.lr_scheduler.StepLR", "--lr_scheduler.step_size", "5")  # fmt: skip
    optimizer, scheduler = cli.trainer.optimizers[0], cli.trainer.lr_scheduler_configs[0].scheduler
    assert type(optimizer).__name__ == "SGD" and optimizer.defaults["momentum"] == 0.9
    assert type(scheduler).__name__ == "StepLR" and scheduler.step_size == 5
    params = mlflow.MlflowClient().get_run(cli.trainer.logger.run_id).data.params
    assert params["optimizer.class_path"] == "torch.optim.SGD" and params["optimizer.init_args.lr"] == "0.05"
    assert params["lr_scheduler.class_path"] == "torch.optim.lr_scheduler.StepLR"
    assert params["lr_scheduler.init_args.step_size"] == "5" and "lr_scheduler.init_args.warmup_ratio" not in params


def test_ddp_on_two_cpu_processes(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    """Two processes, one MLflow run, metrics over the whole split, one registered version."""
    experiment, name = "ddp-test", "emotion-ddp-test"
    args = shrunk_args(tmp_path, tiny_model_dir, small_data_dir,
                       "--trainer.logger.init_args.experiment_name", experiment,
                       "--registry.registered_model_name", name,
                       "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "emo", "fit", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    run = runs[0]
    report = json.loads(open(client.download_artifacts(run.info.run_id, "test/per_class_report.json")).read())
    assert sum(row["support"] for row in report.values()) == SMALL_SIZES["test"]  # both halves counted
    summary = json.loads(open(client.download_artifacts(run.info.run_id, "summary.json")).read())
    assert summary["devices"] == "2 x cpu"
    assert summary["train_examples_seen"] == 2 * SMALL_SIZES["train"]  # 2 epochs, each example once per epoch
    predictions = list(csv.DictReader(open(client.download_artifacts(run.info.run_id, "test/predictions.csv"))))
    assert [int(row["example"]) for row in predictions] == list(range(SMALL_SIZES["test"]))  # each once, none padded in
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == ["1"]


def test_weight_averaging_is_what_gets_tested_and_registered(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    """Lightning's EMAWeightAveraging: the test, and the model logged after it, use the averaged weights of the best checkpoint."""
    cli = fit(tmp_path, tiny_model_dir, small_data_dir, "ema-test", "",
              "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging", "--trainer.callbacks.decay", "0.9",
              "--trainer.max_epochs", "1", "--calibration.temperature_scaling", "false")  # fmt: skip
    checkpoint = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    name = "model.classifier.weight"
    assert not torch.equal(averaged[name], raw[name])  # the average is not the last weights
    assert torch.equal(cli.model.state_dict()[name], averaged[name])
    logged = mlflow.MlflowClient().get_run(cli.trainer.logger.run_id).data.tags[MODEL_URI_TAG]
    registered = mlflow.transformers.load_model(logged, return_type="components")["model"]
    assert torch.equal(registered.state_dict()["classifier.weight"], averaged[name])


def test_the_registered_model_is_calibrated_on_validation_with_the_record_of_it(fitted, tmp_path):
    cli, client, run = fitted
    metrics, tags = run.data.metrics, run.data.tags
    temperature = metrics["calibration/temperature"]
    assert float(tags["emo.temperature"]) == pytest.approx(temperature, rel=1e-5) and temperature > 0
    for split, when in (("val", "before"), ("val", "after"), ("test", "before"), ("test", "after")):
        low, ece, high = (metrics[f"calibration/{split}_{when}_ece{end}"] for end in ("_low", "", "_high"))
        assert 0 <= low < high and ece >= 0  # an interval from resampling the split (ECE's is biased upwards)
    assert metrics["calibration/val_after_nll"] <= metrics["calibration/val_before_nll"] + 1e-9  # fitted there
    assert metrics["test/ece"] == pytest.approx(
        metrics["calibration/test_after_ece"], abs=0.02
    )  # torchmetrics' and emo's
    assert "test/reliability_diagram.png" in {a.path for a in client.list_artifacts(run.info.run_id, "test")}
    # The kept checkpoint's weights, scaled: the model that was tested and registered gives logits / T.
    saved = torch.load(cli.trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=True)
    head = saved["state_dict"]["model.classifier.weight"]
    assert torch.allclose(cli.model.model.classifier.weight, head / temperature, atol=1e-6)
    version = client.get_model_version("emotion-pipeline-test", "1")  # the fit's own (later tests register more)
    assert version.run_id == run.info.run_id and float(version.tags["emo.temperature"]) == pytest.approx(
        temperature, rel=1e-5
    )


def test_prediction_sets_are_fitted_on_the_kept_validation_after_the_temperature_and_reported_on_test(fitted):
    cli, client, run = fitted
    record = json.loads(run.data.tags["emo.prediction_sets"])
    assert (record["alpha"], record["score"], record["class_conditional"]) == (0.1, "lac", False)
    val = pd.read_csv(client.download_artifacts(run.info.run_id, "val/predictions.csv"), keep_default_na=False)
    names = [c.removeprefix("p_") for c in val.columns if c.startswith("p_")]
    raw = val[[f"p_{name}" for name in names]].to_numpy()
    after_t = scaled_probabilities(log_probabilities(raw), run.data.metrics["calibration/temperature"])
    expected = fit_sets(after_t, val["label"].map(names.index).to_numpy(), 0.1)
    assert record["thresholds"] == pytest.approx(expected["thresholds"], abs=1e-4)  # validation's, not test's
    test = pd.read_csv(client.download_artifacts(run.info.run_id, "test/predictions.csv"), keep_default_na=False)
    inside = [row["label"] in row["set"].split("|") if row["set"] else False for _, row in test.iterrows()]
    metrics = run.data.metrics
    assert metrics["conformal/test_coverage"] == pytest.approx(np.mean(inside))
    sizes = [len(s.split("|")) if s else 0 for s in test["set"]]
    assert metrics["conformal/test_set_size"] == pytest.approx(np.mean(sizes))
    assert metrics["conformal/test_size_0_share"] + metrics["conformal/test_size_1_share"] + metrics[
        "conformal/test_size_2plus_share"
    ] == pytest.approx(1)
    for name in names:
        assert 0 <= metrics[f"conformal/test_coverage_{name}_low"] <= metrics[f"conformal/test_coverage_{name}"]
    assert all(row["set"].split("|")[0] == row["predicted"] for _, row in test.iterrows() if row["set"])
    config = json.loads((cli.trainer.logger.folder / "model" / "config.json").read_text())
    assert config["prediction_sets"] == record  # they travel with the registered model


def test_the_test_split_audit_script_flags_test_labels_and_scores_the_rest(fitted, mlflow_server):
    """scripts/test_split_audit.py on the fit's logged test probabilities: accuracy on all is the run's test/acc."""
    _, client, run = fitted
    done = subprocess.run(
        [sys.executable, "-m", "scripts.test_split_audit", "--run", run.info.run_id],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["test_audit/acc_all"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    flagged = int(metrics["test_audit/flagged"])
    assert (
        f"{SMALL_SIZES['test']} test examples, {flagged} flagged: accuracy {metrics['test/acc']:.4f} on all"
        in done.stdout
    )
    issues = client.download_artifacts(run.info.run_id, "test_audit/label_issues.csv")
    assert len(list(csv.DictReader(open(issues)))) == flagged
