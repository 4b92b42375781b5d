"""The end of a fit, against a real MLflow server: the temperature is fitted on the kept checkpoint's validation
predictions, not the last epoch's; after a resume too, and when the kept checkpoint does not hold them; each
checkpoint file is read once."""

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from emo.calibration import fit_temperature, log_probabilities, nll
from emo.fit import EmoCLI
from emo.inference import text_probabilities
from emo.model import EmotionClassifier
from emo.spec import KEPT_STEP_TAG
from emo.tracking import VAL_PREDICTIONS_KEY
from helpers.data import SMALL_SIZES, shrunk_args
from helpers.gates import gate_callback, wait_for_reached
from helpers.processes import start_emo

STEPS_PER_EPOCH = -(-SMALL_SIZES["train"] // 16)  # 19 batches of 16
IN_THE_LAST_EPOCH = 2 * STEPS_PER_EPOCH + 5  # epoch 2 of 0-2, after the kept checkpoint (epoch 1) was written


def fit_args(tmp_path, tiny_model_dir, small_data_dir, name: str, *extra: str) -> list[str]:
    """Three epochs; only the second (epoch 1) writes a kept checkpoint (`every_n_epochs` 2), so the kept epoch is
    not the last whatever the scores; full precision, so a validation computed again gives the same numbers."""
    return ["fit", *shrunk_args(tmp_path, tiny_model_dir, small_data_dir,
                                "--trainer.logger.init_args.experiment_name", name,
                                "--registry.registered_model_name", "null", "--optimizer.lr", "5e-3",
                                "--trainer.max_epochs", "3", "--checkpoint.every_n_epochs", "2",
                                "--trainer.precision", "32-true", *extra)]  # fmt: skip


def validation(data_dir: Path) -> tuple[list[str], list[str]]:
    rows = [line.rsplit(";", 1) for line in (data_dir / "val.txt").read_text().splitlines() if line.strip()]
    return [text for text, _ in rows], [label for _, label in rows]


def probabilities_of_checkpoint(path: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The validation split's probabilities by the checkpoint's weights, computed here and now, apart from emo's fit."""
    model = EmotionClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()
    texts, labels = validation(data_dir)
    tokenizer = AutoTokenizer.from_pretrained(model.hparams.model_name_or_path)
    probabilities = text_probabilities(model.model, tokenizer, texts, max_length=128).double().numpy()
    return probabilities, np.array([list(model.hparams.label_names).index(label) for label in labels])


def the_run(name: str):
    client = mlflow.MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    return client, run


def assert_calibrated_on_the_kept_epoch(name: str, kept_path: str, data_dir: Path) -> None:
    client, run = the_run(name)
    metrics = run.data.metrics
    kept, labels = probabilities_of_checkpoint(kept_path, data_dir)
    assert metrics["calibration/temperature"] == pytest.approx(
        fit_temperature(log_probabilities(kept), labels), rel=1e-4
    )
    loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/loss")}
    kept_step = int(run.data.tags[KEPT_STEP_TAG])
    assert sorted(loss) == [STEPS_PER_EPOCH - 1, 2 * STEPS_PER_EPOCH - 1, 3 * STEPS_PER_EPOCH - 1]
    assert kept_step == 2 * STEPS_PER_EPOCH - 1  # the second epoch's validation, not the last
    assert metrics["calibration/val_before_nll"] == pytest.approx(loss[kept_step], rel=1e-4) == nll(kept, labels)
    assert abs(loss[max(loss)] - loss[kept_step]) > 1e-3  # the last epoch scored otherwise: the test tells them apart


def test_the_temperature_is_fitted_on_the_kept_epoch_s_validation_not_the_last(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    name = "kept-epoch-test"
    cli = EmoCLI(args=fit_args(tmp_path, tiny_model_dir, small_data_dir, name))
    assert cli.kept_checkpoint.best_model_path.endswith(f"step{2 * STEPS_PER_EPOCH}.ckpt")
    assert_calibrated_on_the_kept_epoch(name, cli.kept_checkpoint.best_model_path, small_data_dir)


@pytest.mark.parametrize("kept_holds_its_predictions", [True, False])
def test_a_resumed_fit_calibrates_on_the_kept_checkpoint_reading_each_checkpoint_once(
    kept_holds_its_predictions, tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch
):
    """Killed in the last epoch, after the kept checkpoint; the resumed process validates the last epoch itself, and
    still calibrates on the kept checkpoint's validation: as saved with it, or computed again from its weights when it
    holds none (a checkpoint of an older emo). Every checkpoint file is read once in the resumed process."""
    name = f"kept-resume-{kept_holds_its_predictions}"
    gate = gate_callback(tmp_path / "gate", at_step=IN_THE_LAST_EPOCH, once_per_folder=True)  # the first process's
    args = fit_args(tmp_path, tiny_model_dir, small_data_dir, name, *gate)
    process = start_emo(args, tmp_path / "first.log")
    wait_for_reached(tmp_path / "gate", processes=1, watch=(process,))
    process.kill()
    process.wait(timeout=60)
    [kept] = (tmp_path / "outputs").glob("*/*/checkpoints/best-*.ckpt")
    if not kept_holds_its_predictions:
        saved = torch.load(kept, weights_only=True)
        del saved[VAL_PREDICTIONS_KEY]
        torch.save(saved, kept)

    reads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(str(f)) or load(f, *a, **k))
    cli = EmoCLI(args=[*args, "--ckpt_path", "last"])
    checkpoints = [path for path in reads if path.endswith(".ckpt")]
    assert sorted(checkpoints) == sorted({*checkpoints}) and str(kept) in checkpoints  # each file once
    assert any(path.endswith("last.ckpt") for path in checkpoints)
    assert cli.kept_checkpoint.best_model_path == str(kept)
    assert_calibrated_on_the_kept_epoch(name, str(kept), small_data_dir)
