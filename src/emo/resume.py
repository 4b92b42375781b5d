"""Crash-safe runs: a `last` checkpoint written regularly, and `--ckpt_path last` continuing the same MLflow run.

- `LastCheckpoint` writes `<run folder>/checkpoints/last.ckpt` every `every_n_train_steps`
  steps, at every epoch end, and when the process is asked to stop (Ctrl-C, SIGTERM); Lightning's
  SLURM auto-requeue writes its own `hpc_ckpt_<n>.ckpt` and comes back to it.
- Every checkpoint holds a run record (`checkpoint["emo"]`, written by `LogRunConfig`): the MLflow
  run, the settings it logged and the training step.
- `plan_resume` reads that record before anything loads: `emo fit <same config> --ckpt_path last`
  continues the same run (same run id, metric histories continuing at the checkpoint's step);
  a resume whose settings differ, of a finished run, or of a run recorded past the checkpoint is
  refused with one line, unless `--resume_new_run true` asks for a new run.
"""

import signal
import sys
import threading
import time
import zipfile
from pathlib import Path

import mlflow
import torch
from jsonargparse.typing import NonNegativeInt
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from emo import UserError
from emo.journal import (
    HEARTBEAT_INTERVAL_TAG,
    HEARTBEAT_TAG,
    JOURNAL,
    STALE_AFTER_BEATS,
    in_use,
    read_entries,
    read_sent,
)

RECORD_KEY = "emo"
# Settings that change how a run is watched or where it writes, not what it learns: a resume may change them.
# (A continued run keeps its own name and tags.)
OPERATIONAL = ("ckpt_path", "resume_new_run", "weights_only", "trainer.enable_progress_bar", "trainer.enable_model_summary",
               "data.num_workers", "data.eval_batch_size", "last_checkpoint.every_n_train_steps",
               "trainer.logger.init_args.flush_timeout_s", "trainer.logger.init_args.heartbeat_interval_s",
               "trainer.logger.init_args.run_name", "trainer.logger.init_args.tags")  # fmt: skip
# Settings a continued checkpoint honours (the loop's length, bookkeeping): `--resume_new_run true` may change them.
CONTINUABLE = ("trainer.max_epochs", "trainer.max_steps", "trainer.logger.", "registry.", "checkpoint.", "trainer.log_every_n_steps")
INTERRUPTIONS = (KeyboardInterrupt, SIGTERMException)


class ResumeError(UserError):
    """A checkpoint that cannot continue its run as asked."""


class LastCheckpoint(ModelCheckpoint):
    """Keeps `last.ckpt` current, for `--ckpt_path last` after a crash or a stop.

    Written every `every_n_train_steps` steps, at every epoch end, and when the process is asked
    to stop: Ctrl-C or SIGTERM finish the training step under way, write `last.ckpt` and end the
    run as KILLED (a second Ctrl-C stops at once, keeping the checkpoint before it). A step's end
    is the point Lightning resumes from exactly: no metric step is skipped or repeated.

    Args:
        every_n_train_steps: Also write it every this many training steps (0: only at epoch ends and on stop).
    """

    def __init__(self, every_n_train_steps: NonNegativeInt = 200):
        super().__init__(save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps)
        self.stop_signal: int | None = None
        self.saved_for_stop = False
        self.previous_sigint = None

    def save_now(self, trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self.stop_signal, self.saved_for_stop = None, False
        if threading.current_thread() is threading.main_thread():
            self.previous_sigint = signal.signal(signal.SIGINT, self.ctrl_c)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self.restore_sigint()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.restore_sigint()

    def restore_sigint(self) -> None:
        if self.previous_sigint is not None:
            signal.signal(signal.SIGINT, self.previous_sigint)
            self.previous_sigint = None

    def ctrl_c(self, signum, frame) -> None:
        if self.stop_signal is not None:
            raise KeyboardInterrupt  # asked twice: now
        self.stop_signal = signal.SIGINT
        print("\nemo: stopping after this training step (Ctrl-C again stops at once)", file=sys.stderr)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.stop_signal is not None or trainer.received_sigterm:
            self.save_now(trainer)
            self.saved_for_stop = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # The stop comes here, after Lightning has logged the metrics of the step the checkpoint holds.
        if self.saved_for_stop:
            raise KeyboardInterrupt if self.stop_signal == signal.SIGINT else SIGTERMException()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.save_now(trainer)  # at every epoch end, improved or not

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.save_now(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        # Lightning's own SIGTERM stop (at an epoch's end, or during validation) keeps its progress too.
        if isinstance(exception, SIGTERMException) and not trainer.sanity_checking:
            self.save_now(trainer)


def read_record(path: Path) -> dict | None:
    """The run record of a checkpoint (None for a checkpoint not written by `emo fit`), without loading its weights."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise ResumeError(f"--ckpt_path {path}: not a checkpoint (checkpoints are torch.save archives)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise ResumeError(f"--ckpt_path {path}: no such file") from None
    except IsADirectoryError:
        raise ResumeError(f"--ckpt_path {path}: a folder, not a checkpoint file") from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ResumeError(f"--ckpt_path {path}: not a checkpoint that can be loaded safely ({reason})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ResumeError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint.get(RECORD_KEY)


def differences(recorded: dict, current: dict, allowed: tuple[str, ...] = ()) -> list[str]:
    keys = sorted(k for k in set(recorded) | set(current) if not k.startswith(OPERATIONAL + allowed))
    return [f"{k} {recorded.get(k, '(unset)')} -> {current.get(k, '(unset)')}" for k in keys if recorded.get(k) != current.get(k)]


def last_checkpoints(root: Path) -> list[Path]:
    """`last.ckpt` of every run folder under `root`, newest first."""
    return sorted(root.glob("*/*/checkpoints/last*.ckpt"), key=lambda path: path.stat().st_mtime, reverse=True)


def find_last(root: Path, settings: dict, allowed: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """The newest `last.ckpt` under `root` whose run has these settings (but for `allowed` ones)."""
    found = [(path, read_record(path)) for path in last_checkpoints(root)]
    found = [(path, record) for path, record in found if record]
    if not found:
        raise ResumeError(f"--ckpt_path last: no last checkpoint of an emo run under {root}/ (nothing to resume)")
    return next(((path, record) for path, record in found if not differences(record["params"], settings, allowed)), found[0])


def check_settings(path, record: dict, settings: dict, new_run: bool) -> None:
    """A continued run keeps its settings; a new run may change only what a continuation honours."""
    problems = differences(record["params"], settings, CONTINUABLE if new_run else ())
    if not problems:
        return
    changes = "; ".join(problems[:4])
    if new_run:
        raise ResumeError(f"--ckpt_path {path}: {changes}: a checkpoint carries its optimizer and schedule, so only "
                          f"{', '.join(CONTINUABLE)} may change when continuing it; start a new fit for other changes")  # fmt: skip
    raise ResumeError(f"--ckpt_path {path}: the settings differ from those of run {record['run_id']}: {changes}; use the "
                      "run's settings, or add --resume_new_run true to continue its training in a new run")  # fmt: skip


def hpc_checkpoint(root: Path) -> Path | None:
    """The checkpoint Lightning's SLURM auto-requeue left for the requeued job, if this is one."""
    if not SLURMEnvironment.detect():
        return None
    saved = sorted(root.glob("hpc_ckpt_*.ckpt"), key=lambda path: int(path.stem.rsplit("_", 1)[1]))
    return saved[-1] if saved else None


def check_run_can_continue(record: dict, folder: Path, tracking_uri: str) -> None:
    run_id, step = record["run_id"], record["step"]
    try:
        run = mlflow.MlflowClient(tracking_uri).get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ResumeError(f"run {run_id} of this checkpoint is not in {tracking_uri}; add --resume_new_run true "
                          "to continue its training in a new run") from None  # fmt: skip
    if run.info.status == "FINISHED":
        raise ResumeError(f"run {run_id} has finished: nothing to resume (start a new fit without --ckpt_path)")
    if in_use(folder):
        raise ResumeError(f"run {run_id} is still running: a process on this machine writes {folder}; stop it first")
    tags = run.data.tags
    if run.info.status == "RUNNING" and HEARTBEAT_TAG in tags and not (folder / JOURNAL).exists():
        # Its journal is on another machine: only the heartbeat tells whether its process is alive.
        silent_s = time.time() - float(tags[HEARTBEAT_TAG])
        if silent_s < STALE_AFTER_BEATS * float(tags.get(HEARTBEAT_INTERVAL_TAG, 60)):
            raise ResumeError(f"run {run_id} is still running elsewhere (its heartbeat is {silent_s:.0f} s old); stop it first")
    entries = read_entries(folder / JOURNAL)
    recorded = [e["step"] for e in entries[: read_sent(folder)] if e["op"] == "metrics"]
    if recorded and max(recorded) >= step:  # metrics of batch n are logged at step n - 1
        raise ResumeError(f"run {run_id} already recorded steps up to {max(recorded)}, past this checkpoint (step {step}): "
                          "resume from its last checkpoint, or add --resume_new_run true for a new run")  # fmt: skip


def plan_resume(config, settings: dict, tracking_uri: str) -> int | None:
    """Resolves `--ckpt_path last` and points the logger at the checkpoint's run; returns the step it continues from.

    None: nothing to continue (no checkpoint, a plain Lightning checkpoint, or a new run asked for).
    """
    root = Path(config.trainer.default_root_dir or ".")
    path, new_run = config.ckpt_path, config.resume_new_run
    if path == "last":
        found, record = find_last(root, settings, CONTINUABLE if new_run else ())
        config.ckpt_path, path = str(found), f"last ({found})"
    elif path:
        record = read_record(Path(path))
    elif hpc := hpc_checkpoint(root):
        path, record = hpc, read_record(hpc)  # a requeued SLURM job: Lightning restores it by itself
        newer = root / record["experiment_id"] / record["run_id"] / "checkpoints" / "last.ckpt" if record else None
        if newer and newer.is_file() and read_record(newer)["step"] >= record["step"]:
            # The job trained on after the requeue signal (and stopped cleanly on SIGTERM): continue from there.
            path, record = newer, read_record(newer)
            config.ckpt_path = str(newer)
    else:
        return None
    if record is None:
        return None  # a plain Lightning checkpoint: its training continues in a new run
    check_settings(path, record, settings, new_run)
    if new_run:
        return None
    check_run_can_continue(record, root / record["experiment_id"] / record["run_id"], tracking_uri)
    config.trainer.logger.init_args.run_id = record["run_id"]
    return record["step"]
