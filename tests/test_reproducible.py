"""Same config and seed on the same CPU: the same run, also when refitted from the config a run logged."""

import mlflow
import pytest

from conftest import shrunk_args
from emo.cli import EmoCLI

COMPARED = ["test/acc", "test/f1_macro", "test/f1_weighted", "test/loss", "val/loss", "val/f1_weighted"]


def fit(args: list[str]) -> mlflow.entities.Run:
    cli = EmoCLI(args=["fit", *args])
    return mlflow.MlflowClient().get_run(cli.trainer.logger.run_id)


def histories(run) -> dict[str, list[tuple[int, float]]]:
    client = mlflow.MlflowClient()
    return {name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)] for name in COMPARED + ["train/loss"]}


def test_same_seed_same_metrics_and_a_logged_config_refits_its_run(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    common = ["--trainer.logger.init_args.experiment_name", "reproducible-test", "--registry.registered_model_name", "",
              "--model.learning_rate", "5e-3"]  # fmt: skip
    first = fit(shrunk_args(tmp_path / "a", tiny_model_dir, small_data_dir, *common, "--seed_everything", "7"))
    again = fit(shrunk_args(tmp_path / "b", tiny_model_dir, small_data_dir, *common, "--seed_everything", "7"))
    other_seed = fit(shrunk_args(tmp_path / "c", tiny_model_dir, small_data_dir, *common, "--seed_everything", "8"))
    assert histories(again) == histories(first)
    assert histories(other_seed)["train/loss"] != histories(first)["train/loss"]  # the seed matters: the test can fail
    # The README's way to refit a run: its config.yaml, downloaded, is a complete `emo fit --config`.
    config = mlflow.artifacts.download_artifacts(run_id=first.info.run_id, artifact_path="config.yaml", dst_path=str(tmp_path))
    refit = fit(["--config", config, "--trainer.default_root_dir", str(tmp_path / "refit")])
    assert refit.info.run_id != first.info.run_id and refit.data.params == first.data.params | {
        "trainer.default_root_dir": str(tmp_path / "refit")
    }
    assert histories(refit) == histories(first)
    assert refit.data.metrics["test/acc"] == pytest.approx(first.data.metrics["test/acc"], abs=0)
