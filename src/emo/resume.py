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

import time
from pathlib import Path

import mlflow
import torch
from jsonargparse.typing import NonNegativeInt
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from emo import UserError
from emo.journal import HEARTBEAT_INTERVAL_TAG, HEARTBEAT_TAG, JOURNAL, STALE_AFTER_BEATS, read_entries, read_sent

RECORD_KEY = "emo"
# Settings that change how a run is watched or where it writes, not what it learns: a resume may change them.
OPERATIONAL = ("ckpt_path", "resume_new_run", "weights_only", "trainer.enable_progress_bar", "trainer.enable_model_summary",
               "data.num_workers", "trainer.logger.init_args.flush_timeout_s", "trainer.logger.init_args.heartbeat_interval_s",
               "last_checkpoint.every_n_train_steps", "data.eval_batch_size")  # fmt: skip
INTERRUPTIONS = (KeyboardInterrupt, SIGTERMException)


class ResumeError(UserError):
    """A checkpoint that cannot continue its run as asked."""


class LastCheckpoint(ModelCheckpoint):
    """Keeps `last.ckpt` current, for `--ckpt_path last` after a crash or an interruption.

    Args:
        every_n_train_steps: Also write it every this many training steps (0: only at epoch ends and on stop).
    """

    def __init__(self, every_n_train_steps: NonNegativeInt = 200):
        super().__init__(save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps)

    def save_now(self, trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module) -> None:
        self.save_now(trainer)  # at every epoch end, improved or not

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.save_now(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        # Asked to stop: keep the progress. A crash (a NaN loss, a bug) keeps the last good state instead.
        if isinstance(exception, INTERRUPTIONS) and not trainer.sanity_checking:
            self.save_now(trainer)


def read_record(path: Path) -> dict | None:
    """The run record of a checkpoint (None for a checkpoint not written by `emo fit`), without loading its weights."""
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


def differences(recorded: dict, current: dict) -> list[str]:
    keys = sorted(k for k in set(recorded) | set(current) if not k.startswith(OPERATIONAL))
    return [f"{k} {recorded.get(k, '(unset)')} -> {current.get(k, '(unset)')}" for k in keys if recorded.get(k) != current.get(k)]


def last_checkpoints(root: Path) -> list[Path]:
    """`last.ckpt` of every run folder under `root`, newest first."""
    return sorted(root.glob("*/*/checkpoints/last*.ckpt"), key=lambda path: path.stat().st_mtime, reverse=True)


def find_last(root: Path, settings: dict) -> tuple[Path, dict]:
    """The newest `last.ckpt` under `root` whose run has these settings."""
    found = [(path, read_record(path)) for path in last_checkpoints(root)]
    found = [(path, record) for path, record in found if record]
    if not found:
        raise ResumeError(f"--ckpt_path last: no last checkpoint of an emo run under {root}/ (nothing to resume)")
    for path, record in found:
        if not differences(record["params"], settings):
            return path, record
    path, record = found[0]
    raise ResumeError(f"--ckpt_path last: the settings differ from those of run {record['run_id']} ({path}): "
                      f"{'; '.join(differences(record['params'], settings)[:4])}; use the run's settings, "
                      "or add --resume_new_run true to continue its training in a new run")  # fmt: skip


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
    tags = run.data.tags
    if run.info.status == "RUNNING" and HEARTBEAT_TAG in tags:
        silent_s = time.time() - float(tags[HEARTBEAT_TAG])
        if silent_s < STALE_AFTER_BEATS * float(tags.get(HEARTBEAT_INTERVAL_TAG, 60)):
            raise ResumeError(f"run {run_id} is still running (its heartbeat is {silent_s:.0f} s old); stop it first")
    entries = read_entries(folder / JOURNAL)
    recorded = [e["step"] for e in entries[: read_sent(folder)] if e["op"] == "metrics"]
    if recorded and max(recorded) > step:
        raise ResumeError(f"run {run_id} already recorded steps up to {max(recorded)}, past this checkpoint (step {step}): "
                          "resume from its last checkpoint, or add --resume_new_run true for a new run")  # fmt: skip


def plan_resume(config, settings: dict, tracking_uri: str) -> int | None:
    """Resolves `--ckpt_path last` and points the logger at the checkpoint's run; returns the step it continues from.

    None: nothing to continue (no checkpoint, a plain Lightning checkpoint, or a new run asked for).
    """
    root = Path(config.trainer.default_root_dir or ".")
    path = config.ckpt_path
    if path == "last":
        path, record = find_last(root, settings)
        config.ckpt_path = str(path)
    elif path:
        record = read_record(Path(path))
    elif hpc := hpc_checkpoint(root):
        record = read_record(hpc)  # Lightning restores it by itself; the run continues here
    else:
        return None
    if record is None or config.resume_new_run:
        return None
    problems = differences(record["params"], settings)
    if problems:
        raise ResumeError(f"--ckpt_path {path}: the settings differ from those of run {record['run_id']}: "
                          f"{'; '.join(problems[:4])}; use the run's settings, or add --resume_new_run true")  # fmt: skip
    check_run_can_continue(record, root / record["experiment_id"] / record["run_id"], tracking_uri)
    config.trainer.logger.init_args.run_id = record["run_id"]
    return record["step"]
