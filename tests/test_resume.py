"""Crash-safe runs against a real MLflow server: a killed or stopped fit continues its own run with `--ckpt_path last`."""

import json
import shutil
import signal
import time

import mlflow
import pytest

from emo.fit.checkpoint_files import CheckpointFiles
from emo.fit.resume import read_record
from emo.spec import ENDED_BY_TAG, HEARTBEAT_TAG
from emo.store import is_stale
from helpers.data import SLURM, SMALL_SIZES, shrunk_args
from helpers.gates import gate_callback, open_gate, wait_for_reached
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


def results(client, run_id: str) -> dict:
    """What a fit ends with: every epoch's validation metrics and the test metrics."""
    run = client.get_run(run_id)
    per_epoch = {
        f"{key}@{m.step}": m.value
        for key in run.data.metrics
        if key.startswith("val/")
        for m in client.get_metric_history(run_id, key)
    }
    return {**per_epoch, **{key: value for key, value in run.data.metrics.items() if key.startswith("test/")}}


def test_a_killed_fit_continues_its_own_run_and_ends_as_if_never_stopped(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    """SIGKILL in the second epoch, 2 steps after its last step checkpoint; `--ckpt_path last` continues the same run
    and ends with the same validation metrics at every epoch and the same test metrics as the same fit never stopped
    (same seed, same machine): every part of the training state comes back (weights, optimizer, schedule, the
    epoch's order and position, the random numbers of dropout)."""
    name = "sigkill-resume-test"
    args = fit_args(tmp_path, tiny_model_dir, small_data_dir, name)
    stop_at_the_gate(tmp_path, args, signal.SIGKILL)
    client = mlflow.MlflowClient()
    killed = the_run(client, name)
    assert killed.info.status == "RUNNING"  # nobody could say otherwise yet
    assert max(steps(client, killed.info.run_id, "train/loss")) < STOP_AT  # only what a checkpoint holds
    [last] = (tmp_path / "outputs").glob("*/*/checkpoints/last.ckpt")
    assert (
        STEPS_PER_EPOCH < read_record(CheckpointFiles(), last)["step"] < STOP_AT
    )  # mid-epoch: the resume starts inside epoch 2

    code, output = run_emo([*args, "--ckpt_path", "last"], tmp_path / "resumed.log")
    assert code == 0, output[-3000:]
    assert the_run(client, name).info.run_id == killed.info.run_id
    assert_one_complete_record(client, name)

    straight = tmp_path / "straight"
    straight.mkdir()
    open_gate(straight / "gate")  # the same callbacks, never held
    code, output = run_emo(fit_args(straight, tiny_model_dir, small_data_dir, f"{name}-straight"), straight / "fit.log")
    assert code == 0, output[-3000:]
    resumed, never_stopped = (
        results(client, killed.info.run_id),
        results(client, the_run(client, f"{name}-straight").info.run_id),
    )
    assert {f"val/loss@{STEPS_PER_EPOCH - 1}", f"val/loss@{2 * STEPS_PER_EPOCH - 1}", "test/acc"} <= set(resumed)
    assert resumed == pytest.approx(never_stopped, rel=1e-6, abs=1e-9)


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
    changed = [*args, "--ckpt_path", "last", "--optimizer.lr", "0.01"]
    code, output = run_emo(changed, tmp_path / "refused.log")
    assert code != 0 and "Traceback" not in output
    assert f"run {killed.info.run_id} stopped beating" in output
    assert the_run(client, name).info.status == "KILLED"
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("emo: error: --ckpt_path last (") and "the settings differ" in last_line
    assert "optimizer.init_args.lr 0.0001 -> 0.01" in last_line

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


@pytest.mark.parametrize("then", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_slurm_requeue_comes_back_to_the_same_run(tmp_path, tiny_model_dir, small_data_dir, tracking_uri, then):
    """Lightning's auto-requeue (SIGUSR1: hpc checkpoint, requeue) still works, and the requeued job continues the run.

    SLURM sends SIGTERM before it ends a job: emo then stops at a step's end with a newer last.ckpt, which the
    requeued job prefers. Killed outright, the job comes back from Lightning's hpc checkpoint. Once the training
    has ended the hpc checkpoint is deleted.
    """
    name = f"slurm-requeue-test-{then.name.lower()}"
    args = fit_args(tmp_path, tiny_model_dir, small_data_dir, name)
    process = start_emo(args, tmp_path / "first.log", env=SLURM)
    wait_for_reached(tmp_path / "gate", processes=1, watch=(process,))
    process.send_signal(signal.SIGUSR1)  # what SLURM sends before the time limit
    outputs = tmp_path / "outputs"
    wait_until(lambda: list(outputs.glob("hpc_ckpt_*.ckpt")) or process.poll() is not None, "an hpc checkpoint")
    process.send_signal(then)  # `scontrol requeue` (absent here) would start the job again
    process.wait(timeout=120)
    assert list(outputs.glob("hpc_ckpt_*.ckpt")), (tmp_path / "first.log").read_text()[-3000:]
    client = mlflow.MlflowClient()
    first = the_run(client, name)

    code, output = run_emo(args, tmp_path / "requeued.log", env=SLURM)  # the same command, no --ckpt_path
    assert code == 0, output[-3000:]
    assert the_run(client, name).info.run_id == first.info.run_id
    assert_one_complete_record(client, name)  # either way: every step once, no gap
    # Used up: left behind, Lightning would load it into the test after the fit (in place of the kept checkpoint,
    # which may be gone if the requeued job improved on it) and the next fit here would try to resume it.
    assert not list(outputs.glob("hpc_ckpt_*.ckpt"))


BEAT_S = 3  # stale after 15 s of silence: a live process's beat, however busy the machine, is never that late


def wait_until(condition, what: str, timeout_s: float = 120, watch=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert watch is None or watch.poll() is None, f"the process exited with {watch.returncode} before {what}"
        assert time.monotonic() < deadline, f"not {what} within {timeout_s} s"
        time.sleep(0.2)


def hide_the_journal(folder) -> None:
    """The run folder as another machine that shares the checkpoints sees it: without this machine's journal."""
    (folder / "first-machine").mkdir(exist_ok=True)
    for path in folder.glob("journal.*"):
        path.rename(folder / "first-machine" / path.name)


def test_a_live_run_s_heartbeat_refuses_a_resume_elsewhere_and_a_dead_one_is_ended_killed(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    """The heartbeat through real processes: while the fit lives its sender beats, so a resume where its journal is
    not (another machine sharing the checkpoints) is refused; once it is SIGKILLed the beats stop, and the next emo
    command ends the run KILLED and may continue it."""
    name = "heartbeat-test"
    args = fit_args(
        tmp_path, tiny_model_dir, small_data_dir, name, "--trainer.logger.init_args.heartbeat_interval_s", str(BEAT_S)
    )
    process = start_emo(args, tmp_path / "first.log")
    wait_for_reached(tmp_path / "gate", processes=1, watch=(process,))
    client = mlflow.MlflowClient()
    run_id = the_run(client, name).info.run_id
    wait_until(lambda: HEARTBEAT_TAG in client.get_run(run_id).data.tags, "beating", watch=process)
    folder = next((tmp_path / "outputs").glob(f"*/{run_id}"))
    hide_the_journal(folder)
    code, output = run_emo([*args, "--ckpt_path", "last"], tmp_path / "elsewhere.log")
    assert code == 1 and "Traceback" not in output
    assert (
        output.strip()
        .splitlines()[-1]
        .startswith(f"emo: error: run {run_id} is still running elsewhere (its heartbeat is ")
    )
    assert client.get_run(run_id).info.status == "RUNNING"

    process.kill()
    process.wait(timeout=60)
    wait_until(lambda: is_stale(client.get_run(run_id).data.tags), "silent for five intervals")
    hide_the_journal(folder)  # what the first process wrote after the first look, too
    code, output = run_emo([*args, "--ckpt_path", "last"], tmp_path / "resumed.log")
    assert f"emo: run {run_id} stopped beating (its process died); marked KILLED" in output
    assert code == 0, output[-3000:]
    assert client.get_run(run_id).data.tags[ENDED_BY_TAG].startswith("no heartbeat for ")
    assert_one_complete_record(client, name)  # continued from the shared checkpoint


def test_a_resume_is_refused_while_the_run_s_process_lives(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    name = "resume-while-alive-test"
    args = fit_args(tmp_path, tiny_model_dir, small_data_dir, name)
    process = start_emo(args, tmp_path / "first.log")
    wait_for_reached(tmp_path / "gate", processes=1, watch=(process,))  # alive, with a last.ckpt behind it
    code, output = run_emo([*args, "--ckpt_path", "last"], tmp_path / "second.log")
    assert code == 1 and "Traceback" not in output
    run = the_run(mlflow.MlflowClient(), name)
    assert output.strip().splitlines()[-1] == (
        f"emo: error: run {run.info.run_id} is still running: a process on this "
        f"machine writes {tmp_path / 'outputs' / run.info.experiment_id / run.info.run_id}; "
        "stop it first"
    )
    assert run.info.status == "RUNNING"  # the live run is untouched
    process.kill()


def test_a_checkpoint_older_than_its_run_s_record_is_refused(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    name = "old-checkpoint-test"
    args = fit_args(tmp_path, tiny_model_dir, small_data_dir, name)
    at = args.index("--trainer.callbacks") + 1
    early = {"class_path": "helpers.gates.Gate", "init_args": {"folder": str(tmp_path / "early"), "at_step": 6}}
    args[at] = json.dumps([*json.loads(args[at]), early])  # a second gate, before the first
    process = start_emo(args, tmp_path / "first.log")
    wait_for_reached(tmp_path / "early", processes=1, watch=(process,))
    [last] = (tmp_path / "outputs").glob("*/*/checkpoints/last.ckpt")
    old = shutil.copy(last, tmp_path / "step-5.ckpt")  # written at step 5
    open_gate(tmp_path / "early")
    wait_for_reached(tmp_path / "gate", processes=1, watch=(process,))
    client = mlflow.MlflowClient()
    run = the_run(client, name)
    wait_until(
        lambda: max(steps(client, run.info.run_id, "train/loss"), default=0) >= 9,  # the server holds steps past step 5
        "steps past the old checkpoint recorded",
        watch=process,
    )
    process.kill()
    process.wait(timeout=60)
    code, output = run_emo([*args, "--ckpt_path", str(old)], tmp_path / "old.log")
    assert code == 1 and "Traceback" not in output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith(
        f"emo: error: run {run.info.run_id} already recorded steps up to "
    ) and last_line.endswith(
        "past this checkpoint (step 5): resume from its last checkpoint, or add --resume_new_run true for a new run"
    )


def test_a_second_ctrl_c_stops_at_once_keeping_the_checkpoint_before_it(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    name = "second-ctrl-c-test"
    args = fit_args(tmp_path, tiny_model_dir, small_data_dir, name)
    gate = json.loads(args[args.index("--trainer.callbacks") + 1])
    gate[0]["init_args"]["hold_on_stop"] = True  # busy in a step: the first Ctrl-C waits for it to end
    args[args.index("--trainer.callbacks") + 1] = json.dumps(gate)
    process = start_emo(args, tmp_path / "first.log")
    wait_for_reached(tmp_path / "gate", processes=1, watch=(process,))
    process.send_signal(signal.SIGINT)
    wait_until((tmp_path / "gate" / "stop-seen").exists, "the first Ctrl-C seen", watch=process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) != 0
    output = (tmp_path / "first.log").read_text()
    assert "stopping after this training step (Ctrl-C again stops at once)" in output and "Traceback" not in output
    client = mlflow.MlflowClient()
    stopped = the_run(client, name)
    assert stopped.info.status == "KILLED"
    [last] = (tmp_path / "outputs").glob("*/*/checkpoints/last.ckpt")
    assert (
        read_record(CheckpointFiles(), last)["step"] == STOP_AT - STOP_AT % 5
    )  # the step checkpoint before the stop; none at the stop
    code, output = run_emo([*args, "--ckpt_path", "last"], tmp_path / "resumed.log")
    assert code == 0, output[-3000:]
    assert_one_complete_record(client, name)
