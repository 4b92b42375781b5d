"""Crash-safe runs against a real MLflow server: a killed or stopped fit continues its own run with `--ckpt_path last`."""

import signal
import time

import mlflow
import pytest

from helpers.data import SMALL_SIZES, shrunk_args
from helpers.gates import gate_callback, wait_for_reached
from helpers.processes import run_emo, start_emo

STEPS_PER_EPOCH = -(-SMALL_SIZES["train"] // 16)  # 19 batches of 16
STOP_AT = STEPS_PER_EPOCH + 8  # in the second epoch, between two step checkpoints (every 5 steps)


def fit_args(tmp_path, tiny_model_dir, small_data_dir, name: str, *extra: str) -> list[str]:
    gate = gate_callback(tmp_path / "gate", at_step=STOP_AT, once_per_folder=True)  # holds the first process only
    return ["fit", *shrunk_args(tmp_path, tiny_model_dir, small_data_dir,
                                "--trainer.logger.init_args.experiment_name", name,
                                "--registry.registered_model_name", name,
                                "--last_checkpoint.every_n_train_steps", "5",
                                "--trainer.log_every_n_steps", "2", *gate, *extra)]  # fmt: skip


def stop_at_the_gate(tmp_path, args: list[str], how: signal.Signals) -> str:
    """Starts the fit, stops it with `how` while it waits at the gate; returns its output."""
    process = start_emo(args, tmp_path / "first.log")
    wait_for_reached(tmp_path / "gate", processes=1, watch=(process,))
    process.send_signal(how)
    process.wait(timeout=120)
    return (tmp_path / "first.log").read_text()


def the_run(client, name: str):
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def steps(client, run_id: str, metric: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


def assert_one_complete_record(client, name: str) -> None:
    run = the_run(client, name)
    assert run.info.status == "FINISHED"
    last_step = 2 * STEPS_PER_EPOCH - 1  # metrics of batch n are logged at step n - 1
    assert steps(client, run.info.run_id, "train/loss") == list(range(1, last_step + 1, 2))  # no gap, no repeat
    assert steps(client, run.info.run_id, "val/f1_weighted") == [STEPS_PER_EPOCH - 1, last_step]
    assert "test/f1_weighted" in run.data.metrics
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == ["1"]


def test_killed_fit_continues_its_own_run(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    name = "sigkill-resume-test"
    args = fit_args(tmp_path, tiny_model_dir, small_data_dir, name)
    stop_at_the_gate(tmp_path, args, signal.SIGKILL)
    client = mlflow.MlflowClient()
    killed = the_run(client, name)
    assert killed.info.status == "RUNNING"  # nobody could say otherwise yet
    assert max(steps(client, killed.info.run_id, "train/loss")) < STOP_AT  # only what a checkpoint holds

    code, output = run_emo([*args, "--ckpt_path", "last"], tmp_path / "resumed.log")
    assert code == 0, output[-3000:]
    assert the_run(client, name).info.run_id == killed.info.run_id
    assert_one_complete_record(client, name)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopped_fit_keeps_its_progress_and_continues(tmp_path, tiny_model_dir, small_data_dir, tracking_uri, how):
    name = f"stop-resume-test-{how.name.lower()}"
    args = fit_args(tmp_path, tiny_model_dir, small_data_dir, name)
    output = stop_at_the_gate(tmp_path, args, how)
    client = mlflow.MlflowClient()
    stopped = the_run(client, name)
    assert stopped.info.status == "KILLED"
    assert "--ckpt_path last" in output  # the way on is printed
    # The step under way when the signal came is finished, checkpointed and recorded: nothing is lost.
    assert steps(client, stopped.info.run_id, "train/loss") == list(range(1, STOP_AT + 1, 2))

    code, output = run_emo([*args, "--ckpt_path", "last"], tmp_path / "resumed.log")
    assert code == 0, output[-3000:]
    assert_one_complete_record(client, name)


def test_resume_is_refused_or_a_new_run_when_asked(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    name = "resume-rules-test"
    args = fit_args(tmp_path, tiny_model_dir, small_data_dir, name)
    stop_at_the_gate(tmp_path, args, signal.SIGKILL)
    client = mlflow.MlflowClient()
    killed = the_run(client, name)
    # The dead process's heartbeat goes stale; the next emo command in the experiment ends the run.
    client.set_tag(killed.info.run_id, "emo.heartbeat", str(int(time.time()) - 3600))
    changed = [*args, "--ckpt_path", "last", "--model.learning_rate", "0.01"]
    code, output = run_emo(changed, tmp_path / "refused.log")
    assert code != 0 and "Traceback" not in output
    assert f"run {killed.info.run_id} stopped beating" in output
    assert the_run(client, name).info.status == "KILLED"
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("emo: error: --ckpt_path last (") and "the settings differ" in last_line
    assert "model.learning_rate 0.0001 -> 0.01" in last_line

    # A checkpoint carries its optimizer: a new learning rate cannot take effect, even in a new run.
    code, output = run_emo([*changed, "--resume_new_run", "true"], tmp_path / "refused-again.log")
    assert code != 0 and "only trainer.max_epochs" in output.strip().splitlines()[-1]

    longer = [*args, "--ckpt_path", "last", "--trainer.max_epochs", "3", "--resume_new_run", "true"]
    code, output = run_emo(longer, tmp_path / "new-run.log")
    assert code == 0, output[-3000:]
    runs = client.search_runs([killed.info.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED", "FINISHED"}
    new = next(r for r in runs if r.info.status == "FINISHED")
    assert new.data.params["trainer.max_epochs"] == "3" and new.data.metrics["epoch"] == 3  # trained to the end

    code, output = run_emo([*args, "--ckpt_path", "last", "--trainer.max_epochs", "3"], tmp_path / "finished.log")
    assert code != 0 and "has finished: nothing to resume" in output.strip().splitlines()[-1]


SLURM = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "emo-test", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
         "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1"}  # fmt: skip


@pytest.mark.parametrize("then", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_slurm_requeue_comes_back_to_the_same_run(tmp_path, tiny_model_dir, small_data_dir, tracking_uri, then):
    """Lightning's auto-requeue (SIGUSR1: hpc checkpoint, requeue) still works, and the requeued job continues the run.

    SLURM sends SIGTERM before it ends a job: emo then stops at a step's end with a newer last.ckpt, which the
    requeued job prefers. Killed outright, the job comes back from Lightning's hpc checkpoint.
    """
    name = f"slurm-requeue-test-{then.name.lower()}"
    args = fit_args(tmp_path, tiny_model_dir, small_data_dir, name)
    process = start_emo(args, tmp_path / "first.log", env=SLURM)
    wait_for_reached(tmp_path / "gate", processes=1, watch=(process,))
    process.send_signal(signal.SIGUSR1)  # what SLURM sends before the time limit
    outputs = tmp_path / "outputs"
    while not list(outputs.glob("hpc_ckpt_*.ckpt")) and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(then)  # `scontrol requeue` (absent here) would start the job again
    process.wait(timeout=120)
    assert list(outputs.glob("hpc_ckpt_*.ckpt")), (tmp_path / "first.log").read_text()[-3000:]
    client = mlflow.MlflowClient()
    first = the_run(client, name)

    code, output = run_emo(args, tmp_path / "requeued.log", env=SLURM)  # the same command, no --ckpt_path
    assert code == 0, output[-3000:]
    assert the_run(client, name).info.run_id == first.info.run_id
    if then == signal.SIGTERM:
        assert_one_complete_record(client, name)
    else:  # resumed from the moment of the signal, inside a step: Lightning's own bookkeeping decides the steps
        run = the_run(client, name)
        logged = steps(client, run.info.run_id, "train/loss")
        assert run.info.status == "FINISHED" and len(logged) == len(set(logged)) and max(logged) >= 2 * STEPS_PER_EPOCH - 2
        assert [v.version for v in client.search_model_versions(f"name='{name}'")] == ["1"]
