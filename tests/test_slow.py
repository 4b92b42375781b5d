"""Slow and GPU tests: `make test-slow`; the GPU test runs where CUDA is (`pytest -m gpu`)."""

import json

import mlflow
import pytest
import torch

from emo.data.fetch import CARER_LABELS
from emo.fit import EmoCLI
from helpers.data import ROOT, shrunk_args


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_real_minilm_learns_from_4000_real_examples(tmp_path, data_dir, minilm_dir, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cli = EmoCLI(args=["fit", "--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/offline.yaml"),
                       "--model.model_name_or_path", str(minilm_dir), "--data.data_dir", str(data_dir),
                       "--data.train_size", "4000", "--trainer.max_epochs", "1",
                       "--trainer.default_root_dir", str(tmp_path / "outputs")])  # fmt: skip
    metrics = cli.trainer.callback_metrics
    assert metrics["test/acc"] > 0.7 and metrics["test/f1_weighted"] > 0.6  # majority class: 0.35
    model = mlflow.pyfunc.load_model("models:/minilm-emotion-classifier@champion")
    assert model.predict(["i am so happy and excited today"])["label"][0] in CARER_LABELS


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_one_gpu_in_bf16(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    cli = EmoCLI(
        args=[
            "fit",
            *shrunk_args(
                tmp_path,
                tiny_model_dir,
                small_data_dir,
                "--trainer.accelerator",
                "gpu",
                "--trainer.precision",
                "bf16-mixed",
                "--trainer.logger.init_args.experiment_name",
                "gpu-test",
            ),
        ]
    )
    client = mlflow.MlflowClient()
    summary = json.loads(open(client.download_artifacts(cli.trainer.logger.run_id, "summary.json")).read())
    assert summary["devices"] == "1 x cuda"
    run_id = cli.trainer.logger.run_id
    val_loss = [m.value for m in sorted(client.get_metric_history(run_id, "val/loss"), key=lambda m: m.step)]
    assert len(val_loss) == 2 and val_loss[1] < val_loss[0]  # bf16 on the GPU learns
    accuracy = float(cli.trainer.callback_metrics["test/acc"]) * 100  # the share of the 100 test examples right
    assert accuracy == pytest.approx(round(accuracy), abs=1e-3)
