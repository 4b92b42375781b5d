"""Tracking outages against a real MLflow server that the tests kill and restart on the same port and store."""

import json
import time

import mlflow
import pytest

from helpers.data import ROOT, shrunk_args
from helpers.gates import open_gate, wait_for_reached
from helpers.processes import run_emo, start_emo, wait_for_output
from helpers.records import STEPS, assert_complete_record, outage_fit_args
from helpers.server import MlflowServer


@pytest.fixture
def server(tmp_path, monkeypatch):
    server = MlflowServer(tmp_path / "server")
    server.folder.mkdir()
    server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    mlflow.set_tracking_uri(server.url)
    yield server
    server.kill()


def test_a_minute_without_the_server_loses_nothing(tmp_path, tiny_model_dir, small_data_dir, server):
    name = "outage-test"
    process = start_emo(outage_fit_args(tmp_path, tiny_model_dir, small_data_dir, name), tmp_path / "fit.log")
    wait_for_reached(tmp_path / "down", processes=1, watch=(process,))
    server.kill()
    cut = time.monotonic()
    open_gate(tmp_path / "down")
    wait_for_reached(tmp_path / "up", processes=1, watch=(process,))  # 25 steps trained and logged meanwhile
    time.sleep(max(0.0, 60 - (time.monotonic() - cut)))  # the outage lasts a minute
    server.start()
    open_gate(tmp_path / "up")
    assert process.wait(timeout=600) == 0, (tmp_path / "fit.log").read_text()[-3000:]
    assert_complete_record(mlflow.MlflowClient(), name)


def test_a_longer_outage_keeps_the_records_for_emo_sync(tmp_path, tiny_model_dir, small_data_dir, server):
    name = "long-outage-test"
    args = outage_fit_args(
        tmp_path, tiny_model_dir, small_data_dir, name, "--trainer.logger.init_args.flush_timeout_s", "2"
    )
    process = start_emo(args, tmp_path / "fit.log")
    wait_for_reached(tmp_path / "down", processes=1, watch=(process,))
    server.kill()
    open_gate(tmp_path / "down")
    open_gate(tmp_path / "up")
    assert process.wait(timeout=600) == 0, (tmp_path / "fit.log").read_text()[-3000:]
    output = (tmp_path / "fit.log").read_text()
    assert "did not take" in output and "`emo sync` sends them" in output and "Traceback" not in output
    [run_folder] = [p for p in (tmp_path / "outputs").glob("*/*") if (p / "journal.jsonl").exists()]
    assert (run_folder / "model" / "model.safetensors").exists()  # the trained model is on disk
    assert list((run_folder / "checkpoints").glob("best-*.ckpt"))

    server.start()
    code, output = run_emo(["sync", "--root", str(tmp_path / "outputs")], tmp_path / "sync.log")
    assert code == 0, output[-3000:]
    assert "sent" in output and run_folder.name in output
    assert_complete_record(mlflow.MlflowClient(), name)


def test_an_absent_server_is_one_line_before_anything_loads(tmp_path, tiny_model_dir, small_data_dir, server):
    server.kill()
    started = time.monotonic()
    code, output = run_emo(
        outage_fit_args(tmp_path, tiny_model_dir, small_data_dir, "absent-test"), tmp_path / "fit.log"
    )
    elapsed = time.monotonic() - started
    assert code != 0 and "Traceback" not in output
    assert output.strip().splitlines()[-1] == (
        f"emo: error: cannot reach the MLflow tracking server at {server.url} (connection refused): start it "
        f"(make server), check MLFLOW_TRACKING_URI, or unset it to record into sqlite:///mlflow.db"
    )
    assert "Tokenizing" not in output and not (tmp_path / "outputs").exists()  # nothing was loaded or written
    print(f"absent server reported after {elapsed:.1f} s")


def test_a_sweep_waits_out_an_outage_between_trials(tmp_path, tiny_model_dir, small_data_dir, server):
    """The server dies during the first trial and stays away over the trial boundary: nothing is lost, nothing doubled."""
    name = "sweep-outage-test"
    gate = {
        "class_path": "helpers.gates.Gate",
        "init_args": {"folder": str(tmp_path / "down"), "at_step": 5, "run_suffix": "trial-0"},
    }
    args = ["sweep", *shrunk_args(tmp_path, tiny_model_dir, small_data_dir,
                                  "--trainer.logger.init_args.experiment_name", name, "--registry.registered_model_name", name,
                                  "--sweep.study_name", name, "--sweep.storage", f"sqlite:///{tmp_path}/optuna.db",
                                  "--sweep.params", json.dumps({"optimizer.init_args.lr": [1e-3, 3e-3]}), "--sweep.pruner", "null",
                                  "--trainer.log_every_n_steps", "1", "--trainer.logger.init_args.flush_timeout_s", "2",
                                  "--trainer.callbacks", json.dumps([gate]),
                                  configs=["--config", str(ROOT / "configs/sweep.yaml"), "--config", str(ROOT / "configs/offline.yaml")])]  # fmt: skip
    log = tmp_path / "sweep.log"
    process = start_emo(args, log)
    wait_for_reached(tmp_path / "down", processes=1, watch=(process,))
    server.kill()
    open_gate(tmp_path / "down")
    wait_for_output(log, "emo: waiting for the tracking server", process)  # the first trial ended during the outage
    server.start()
    assert process.wait(timeout=600) == 0, log.read_text()[-3000:]

    client = mlflow.MlflowClient()
    experiment_id = client.get_experiment_by_name(name).experiment_id
    [parent] = client.search_runs([experiment_id], filter_string=f"tags.`emo.sweep` = '{name}'")
    assert parent.info.status == "FINISHED" and "emo.best_run_id" in parent.data.tags
    trials = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)
    for trial in trials:  # every step once: nothing lost, nothing twice
        assert sorted(m.step for m in client.get_metric_history(trial.info.run_id, "train/loss")) == list(range(STEPS))
        assert "test/f1_weighted" in trial.data.metrics
    assert [v.run_id for v in client.search_model_versions(f"name='{name}'")] == [parent.data.tags["emo.best_run_id"]]
