"""A fit held at gates while the test cuts its tracking server, and what a complete record of it holds."""

import json

from .data import SMALL_SIZES, shrunk_args

STEPS = 2 * -(-SMALL_SIZES["train"] // 16)  # two epochs of 19 batches


def outage_fit_args(tmp_path, tiny_model_dir, small_data_dir, name: str, *extra: str) -> list[str]:
    # Gate "down": the test cuts the server; gate "up": training has gone on without it.
    gates = [
        {"class_path": "helpers.gates.Gate", "init_args": {"folder": str(tmp_path / g), "at_step": step}}
        for g, step in (("down", 5), ("up", 30))
    ]
    return ["fit", *shrunk_args(tmp_path, tiny_model_dir, small_data_dir,
                                "--trainer.logger.init_args.experiment_name", name,
                                "--registry.registered_model_name", name,
                                "--trainer.log_every_n_steps", "1",
                                "--trainer.callbacks", json.dumps(gates), *extra)]  # fmt: skip


def assert_complete_record(client, name: str) -> None:
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    for metric in ("train/loss", "train/lr"):  # every step once: nothing lost, nothing twice
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, metric)) == list(range(STEPS))
    assert len(client.get_metric_history(run.info.run_id, "val/f1_weighted")) == 2
    assert "test/f1_weighted" in run.data.metrics and "train/samples_per_sec" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json"} <= artifacts and "emo.model_uri" in run.data.tags
    assert [v.run_id for v in client.search_model_versions(f"name='{name}'")] == [run.info.run_id]
