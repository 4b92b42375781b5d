"""Same config and seed on the same CPU: the same run, step for step; a run's logged config refits it."""

import mlflow

from emo.fit import EmoCLI
from helpers.data import shrunk_args

COMPARED = ["train/loss", "val/loss", "val/f1_weighted", "test/acc", "test/f1_macro", "test/f1_weighted", "test/loss"]


def fit(args: list[str]) -> mlflow.entities.Run:
    cli = EmoCLI(args=["fit", *args])
    return mlflow.MlflowClient().get_run(cli.trainer.logger.run_id)


def histories(run) -> dict[str, list[tuple[int, float]]]:
    client = mlflow.MlflowClient()
    return {name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)] for name in COMPARED}


def test_same_seed_same_metrics_and_a_logged_config_refits_its_run(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    def shrunk(folder: str, seed: str) -> list[str]:
        return shrunk_args(tmp_path / folder, tiny_model_dir, small_data_dir, "--seed_everything", seed,
                           "--trainer.logger.init_args.experiment_name", "reproducible-test",
                           "--registry.registered_model_name", "", "--optimizer.lr", "5e-3", "--trainer.max_epochs", "1")  # fmt: skip

    first = fit(shrunk("first", "7"))
    # The README's way to refit a run: its config.yaml, downloaded, is a complete `emo fit --config`.
    config = mlflow.artifacts.download_artifacts(
        run_id=first.info.run_id, artifact_path="config.yaml", dst_path=str(tmp_path)
    )
    again = fit(["--config", config])
    assert again.info.run_id != first.info.run_id and again.data.params == first.data.params
    assert histories(again) == histories(first)  # every point, exactly
    other_seed = fit(shrunk("other", "8"))
    assert histories(other_seed)["train/loss"] != histories(first)["train/loss"]  # the seed matters: this test can fail
    # Same seed, yet names a person can tell apart (MLflow's own come from the freshly seeded `random`).
    names = [run.info.run_name for run in (first, again, other_seed)]
    assert len(set(names)) == 3 and all(name.startswith(f"{tiny_model_dir.name.lower()}-lr5e-3-") for name in names), (
        names
    )
    named = fit([*shrunk("named", "7"), "--trainer.logger.init_args.run_name", "my-own-name"])
    assert named.info.run_name == "my-own-name"  # a name given wins
