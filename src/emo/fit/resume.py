"""Resuming a run: `--ckpt_path last` (or a checkpoint file) continues the same MLflow run, or is refused in one line.

- Every checkpoint of `emo fit` holds a run record (`checkpoint["emo"]`, written by `RunRecord`): the
  MLflow run, the settings it logged and the training step.
- `plan_resume` reads that record before anything loads: the same settings continue the same run
  (same run id, metric histories continuing at the checkpoint's step); a resume whose settings
  differ, of a finished run, of a run a live process writes, or of a run recorded past the
  checkpoint is refused, unless `--resume_new_run true` asks for a new run.
"""

from pathlib import Path

import mlflow
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback
from mlflow.exceptions import MlflowException

from emo import UserError
from emo.fit.checkpoint_files import CheckpointFiles
from emo.redact import redact
from emo.spec import WATCHING
from emo.store import in_use, is_stale, last_sent_step, silence_s
from emo.store.journal import JOURNAL
from emo.tracking import journal_logger

RECORD_KEY = "emo"
# Settings a continued checkpoint honours (the loop's length, bookkeeping): `--resume_new_run true` may change them.
CONTINUABLE = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.logger.",
    "registry.",
    "checkpoint.",
    "trainer.log_every_n_steps",
)


class ResumeError(UserError):
    """A checkpoint that cannot continue its run as asked."""


def run_record(run_id: str, experiment_id: str, step: int, settings: dict) -> dict:
    """What a checkpoint carries to continue its run: written under `checkpoint[RECORD_KEY]`."""
    return {"run_id": run_id, "experiment_id": experiment_id, "step": step, "params": settings}


def read_record(files: CheckpointFiles, path) -> dict | None:
    """The run record of a checkpoint (None for a checkpoint not written by `emo fit`)."""
    return files.read(path).get(RECORD_KEY)


def differences(recorded: dict, current: dict, allowed: tuple[str, ...] = ()) -> list[str]:
    """The settings that differ, but for those that only change how a run is watched (emo.spec.WATCHING) and `allowed`."""
    keys = sorted(k for k in set(recorded) | set(current) if not k.startswith(WATCHING + allowed))
    return [
        f"{k} {recorded.get(k, '(unset)')} -> {current.get(k, '(unset)')}"
        for k in keys
        if recorded.get(k) != current.get(k)
    ]


def last_checkpoints(root: Path) -> list[Path]:
    """`last.ckpt` of every run folder under `root`, newest first."""
    return sorted(root.glob("*/*/checkpoints/last*.ckpt"), key=lambda path: path.stat().st_mtime, reverse=True)


def find_last(files: CheckpointFiles, root: Path, settings: dict, allowed: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """The newest `last.ckpt` under `root` whose run has these settings (but for `allowed` ones)."""
    found = [(path, read_record(files, path)) for path in last_checkpoints(root)]
    found = [(path, record) for path, record in found if record]
    if not found:
        raise ResumeError(f"--ckpt_path last: no last checkpoint of an emo run under {root}/ (nothing to resume)")
    return next(
        ((path, record) for path, record in found if not differences(record["params"], settings, allowed)), found[0]
    )


def check_settings(path, record: dict, settings: dict, new_run: bool) -> None:
    """A continued run keeps its settings; a new run may change only what a continuation honours."""
    problems = differences(record["params"], settings, CONTINUABLE if new_run else ())
    if not problems:
        return
    changes = "; ".join(problems[:4])
    if new_run:
        raise ResumeError(
            f"--ckpt_path {path}: {changes}: a checkpoint carries its optimizer and schedule, so only "
            f"{', '.join(CONTINUABLE)} may change when continuing it; start a new fit for other changes"
        )
    raise ResumeError(
        f"--ckpt_path {path}: the settings differ from those of run {record['run_id']}: {changes}; use the "
        "run's settings, or add --resume_new_run true to continue its training in a new run"
    )


def hpc_checkpoint(root: Path) -> Path | None:
    """The checkpoint Lightning's SLURM auto-requeue left for the requeued job, if this is one."""
    if not SLURMEnvironment.detect():
        return None
    saved = sorted(root.glob("hpc_ckpt_*.ckpt"), key=lambda path: int(path.stem.rsplit("_", 1)[1]))
    return saved[-1] if saved else None


def remove_hpc_checkpoints(files: CheckpointFiles, root: Path, run_id: str) -> None:
    """Deletes the SLURM requeue checkpoints of run `run_id` once its training has ended.

    On SLURM, Lightning restores the newest `hpc_ckpt_<n>.ckpt` whenever no `ckpt_path` is given: left
    behind, it would replace the kept checkpoint's weights in the test after the fit, and be resumed by the
    next fit in the same folder.
    """
    if SLURMEnvironment.detect():
        for path in root.glob("hpc_ckpt_*.ckpt"):
            if (read_record(files, path) or {}).get("run_id") == run_id:
                path.unlink()


def check_run_can_continue(record: dict, folder: Path, client) -> None:
    """The checkpoint's run exists, has not finished, no live process writes it, and it recorded nothing past the checkpoint."""
    run_id, step = record["run_id"], record["step"]
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ResumeError(
            f"run {run_id} of this checkpoint is not in {redact(client.tracking_uri)}; add "
            "--resume_new_run true to continue its training in a new run"
        ) from None
    if run.info.status == "FINISHED":
        raise ResumeError(f"run {run_id} has finished: nothing to resume (start a new fit without --ckpt_path)")
    if in_use(folder):
        raise ResumeError(f"run {run_id} is still running: a process on this machine writes {folder}; stop it first")
    silent = silence_s(run.data.tags)
    if (
        run.info.status == "RUNNING"
        and silent is not None
        and not in_this_folder(folder)
        and not is_stale(run.data.tags)
    ):
        # Its journal is on another machine: only the heartbeat tells whether its process is alive.
        raise ResumeError(
            f"run {run_id} is still running elsewhere (its heartbeat is {silent:.0f} s old); stop it first"
        )
    recorded = last_sent_step(folder)
    if recorded is not None and recorded >= step:  # metrics of batch n are logged at step n - 1
        raise ResumeError(
            f"run {run_id} already recorded steps up to {recorded}, past this checkpoint (step {step}): "
            "resume from its last checkpoint, or add --resume_new_run true for a new run"
        )


def in_this_folder(folder: Path) -> bool:
    """Whether the run's journal is here (else the run was written on another machine)."""
    return (folder / JOURNAL).exists()


def plan_resume(files: CheckpointFiles, config, settings: dict, tracking_uri: str) -> int | None:
    """Resolves `--ckpt_path last` and points the logger at the checkpoint's run; returns the step it continues from.

    None: nothing to continue (no checkpoint, a plain Lightning checkpoint, or a new run asked for).
    """
    root = Path(config.trainer.default_root_dir or ".")
    path, new_run = config.ckpt_path, config.resume_new_run
    if path == "last":
        found, record = find_last(files, root, settings, CONTINUABLE if new_run else ())
        config.ckpt_path, path = str(found), f"last ({found})"
    elif path:
        record = read_record(files, path)
    elif hpc := hpc_checkpoint(root):
        path, record = hpc, read_record(files, hpc)  # a requeued SLURM job: Lightning restores it by itself
        newer = root / record["experiment_id"] / record["run_id"] / "checkpoints" / "last.ckpt" if record else None
        if newer and newer.is_file() and read_record(files, newer)["step"] >= record["step"]:
            # The job trained on after the requeue signal (and stopped cleanly on SIGTERM): continue from there.
            path, record = newer, read_record(files, newer)
            config.ckpt_path = str(newer)
    else:
        return None
    if record is None:
        return None  # a plain Lightning checkpoint: its training continues in a new run
    check_settings(path, record, settings, new_run)
    if new_run:
        return None
    check_run_can_continue(record, root / record["experiment_id"] / record["run_id"], mlflow.MlflowClient(tracking_uri))
    config.trainer.logger.init_args.run_id = record["run_id"]
    return record["step"]


def kept_state_as_saved(files: CheckpointFiles, path) -> None:
    """Brings the kept checkpoint's callback state, in the checkpoint a fit resumes from, up to that callback's last save.

    `last.ckpt` is written when a validation ends; the callback that keeps the best checkpoint decides at the end of
    the training epoch, after it. A `last.ckpt` of an epoch's end can so hold that callback's state of the epoch
    before, naming a file it has since replaced: restored as it is, the resumed fit would compare new scores with an
    old one and keep the wrong checkpoint. The newest checkpoint that callback wrote into the same folder (at or before
    the resumed step) holds its state as of that save; it replaces the stale copy in the checkpoint Lightning restores
    (the one read of the file, `CheckpointFiles`: the file itself is not changed).
    """
    resumed, path = files.read(path), Path(path)
    kept = []
    for other in path.parent.glob("*.ckpt"):
        if other != path and not other.name.startswith(("last", "hpc_ckpt_")):
            saved = files.read(other)
            if saved.get("global_step", 0) <= resumed.get("global_step", 0):
                kept.append((saved["global_step"], other.stat().st_mtime_ns, other, saved))
    if not kept:
        return
    *_, newest, saved = max(kept, key=lambda item: item[:2])
    states = resumed.get("callbacks", {})
    for key, state in saved.get("callbacks", {}).items():
        written_by_it = state.get("best_model_path") and Path(state["best_model_path"]).resolve() == newest.resolve()
        if key in states and written_by_it:
            states[key] = state


class RunRecord(Callback):
    """Writes the run record (`run_record`) into every checkpoint the fit saves; `settings` are the run's params, set
    once the config is parsed. Tells the logger which step a checkpoint holds (`JournalLogger.checkpoint_saved`)."""

    def __init__(self):
        self.settings: dict[str, str] = {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        logger = journal_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        checkpoint[RECORD_KEY] = run_record(logger.run_id, logger.experiment_id, trainer.global_step, self.settings)
        logger.checkpoint_saved(trainer.global_step)
