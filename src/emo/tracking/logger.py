"""`JournalLogger`: Lightning's MLflow logger, with everything a run records going through its journal first.

Training never waits for the tracking server, an outage loses nothing, a killed run can be resumed
(`emo.store.journal`). Collaborators tell it what happened through its methods (`attach`, `hold_open`,
`checkpoint_saved`, `note_exception`, `end`) and record through `record_*`.
"""

import datetime
import math
import os
import re
import secrets
import sys
import threading
from pathlib import Path

import mlflow
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

from emo import UserError
from emo.params import flatten, param_value
from emo.redact import redact, redact_item
from emo.spec import DEFAULT_EXPERIMENT, FAILURE_TAG, HEARTBEAT_INTERVAL_TAG
from emo.store import Journal, Sender, mark_as_model_training, pending_journals, resolve_tracking_uri, sync


class RecordsNotSent(UserError):
    """The run's records could not be sent for another reason than an outage."""


INTERRUPTIONS = (KeyboardInterrupt, SIGTERMException)  # a run stopped on purpose: KILLED, and it can be resumed


def last_step_held(global_step: int) -> int:
    """The last metric step a checkpoint at `global_step` holds: Lightning logs batch n's metrics at step n - 1."""
    return global_step - 1


class JournalLogger(MLFlowLogger):
    """Lightning's `MLFlowLogger`; everything the run records goes through its journal (`emo.store.journal`).

    Args:
        experiment_name: MLflow experiment of the run.
        run_name: Display name of the run.
        tracking_uri: Store or server; default `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db`.
        tags: Extra run tags (a sweep passes `mlflow.parentRunId`).
        log_model: Upload the best checkpoint when training ends.
        run_id: Continue this run instead of starting one (`--ckpt_path last` sets it).
        heartbeat_interval_s: A live run sets the tag `emo.heartbeat` this often; one silent for five
            intervals is ended as KILLED by the next emo command.
        flush_timeout_s: At the end, how long to wait for an absent tracking server before leaving
            the rest in the journal for `emo sync`.
        system_metrics_interval_s: MLflow's system metrics (CPU, memory, disk, network; GPU with
            `nvidia-ml-py` installed) are sampled this often, as `system/*`; `null` turns them off.
    """

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, str] | None = None,
        log_model: bool = True,
        run_id: str | None = None,
        heartbeat_interval_s: PositiveInt = 60,
        flush_timeout_s: NonNegativeFloat = 60,
        system_metrics_interval_s: PositiveFloat | None = 10,
    ):
        super().__init__(
            experiment_name=experiment_name,
            run_name=redact(run_name) if run_name else None,
            tracking_uri=tracking_uri or resolve_tracking_uri(),
            tags={key: redact_item(key, value) for key, value in (tags or {}).items()},  # sent as the run is created
            log_model=log_model,
            run_id=run_id,
        )
        self.heartbeat_interval_s = heartbeat_interval_s
        self.flush_timeout_s = flush_timeout_s
        self.system_metrics_interval_s = system_metrics_interval_s
        self.system_metrics: SystemMetricsMonitor | None = None
        self.runs_dir = "outputs"  # the run folder's parent (see attach)
        self.resume_step: int | None = None  # the step of the checkpoint this run continues from (see attach)
        self.held_open = False
        self.ended = False  # its final status is in the journal
        self.interrupted = False
        self.failure: str | None = None
        self.checkpoint_step: int | None = None
        self.best_checkpoint: str | None = None
        self.journal: Journal | None = None
        self.sender: Sender | None = None
        self.background_sync: threading.Thread | None = None
        self.sender_failure_reported = False

    # What collaborators tell the logger.

    def attach(self, runs_dir: str, resume_step: int | None = None, name: str | None = None) -> None:
        """Before the run opens: the run folder goes under `runs_dir` (beside its checkpoints); `resume_step` is the
        step of the checkpoint a resumed run continues from (`emo.fit.resume`); a new run without a `run_name`
        is called `name`."""
        self.runs_dir = runs_dir
        self.resume_step = resume_step
        if self._run_name is None and self._run_id is None and name:
            self._run_name = name

    def hold_open(self) -> None:
        """Lightning's end of `fit` or `test` leaves the run open: the steps after it (the test of the kept checkpoint,
        the report, the registration) belong to the same run, which `end` closes."""
        self.held_open = True

    def end(self, status: str) -> None:
        """The run ends here (`success` or `failed`), held open or not."""
        self.held_open = False
        self.finalize(status)

    def checkpoint_saved(self, global_step: int) -> None:
        """A checkpoint of this step is being written: the metric points it holds may be sent once it is saved."""
        self.checkpoint_step = global_step

    def note_exception(self, exception: BaseException) -> None:
        """Why the run stops: an interruption ends it KILLED (resumable), anything else FAILED with the cause as a tag."""
        self.interrupted = isinstance(exception, INTERRUPTIONS)
        if not self.interrupted:
            self.failure = redact(f"{type(exception).__name__}: {str(exception).strip()[:500]}")

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    @rank_zero_experiment
    def experiment(self) -> mlflow.MlflowClient:
        if not self._initialized:
            resumed = self._run_id is not None
            _ = super().experiment  # finds or creates the experiment and the run
            mark_as_model_training(self._mlflow_client, self._experiment_id)
            self.open_journal(resumed)
            self.start_system_metrics(resumed)
        return self._mlflow_client

    @property
    def folder(self) -> Path:
        """The run's local folder: its journal, checkpoints and artifacts before they are sent."""
        return Path(self.runs_dir) / self.experiment_id / self.run_id

    def open_journal(self, resumed: bool) -> None:
        self.journal = Journal(self.folder, self._run_id, self._tracking_uri)
        if resumed:
            self._mlflow_client.update_run(self._run_id, status="RUNNING")
            if self.resume_step is not None:
                self.journal.drop_unsent_after(last_step_held(self.resume_step))
                self.journal.cover(last_step_held(self.resume_step))
        self.journal.append("tags", tags={HEARTBEAT_INTERVAL_TAG: self.heartbeat_interval_s})
        self.sender = Sender(self.journal, heartbeat_s=self.heartbeat_interval_s)
        self.sender.start()
        others = [folder for folder in pending_journals(Path(self.runs_dir)) if folder != self.folder]
        if others:  # records an earlier process could not send: send them now, beside training
            self.background_sync = threading.Thread(
                target=sync, args=(Path(self.runs_dir),), kwargs={"tracking_uri": self._tracking_uri}, daemon=True
            )
            self.background_sync.start()

    def start_system_metrics(self, resumed: bool) -> None:
        """MLflow's own sampler, straight to the server: during an outage it stops (these are the only records not journaled)."""
        if self.system_metrics_interval_s:
            self.system_metrics = SystemMetricsMonitor(
                self._run_id,
                sampling_interval=self.system_metrics_interval_s,
                resume_logging=resumed,
                tracking_uri=self._tracking_uri,
            )
            self.system_metrics.start()

    def stop_system_metrics(self) -> None:
        """Its last sample is sent unless the server is away: then the sampler is left to its retries, off the exit path."""
        if self.system_metrics is not None:
            stopping = threading.Thread(target=self.system_metrics.finish, daemon=True)
            stopping.start()
            stopping.join(timeout=5)
            self.system_metrics = None

    # What the run records: every call appends to the journal and returns at once.

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        values = {
            re.sub(r"[^a-zA-Z0-9_/. -]+", "", key): float(value)
            for key, value in metrics.items()
            if not isinstance(value, str)
        }
        _ = self.experiment  # opens the run and its journal on first use
        self.check_sender()
        self.journal.append("metrics", step=step or 0, metrics=values)

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        self.record_params(flatten(dict(params)))

    @rank_zero_only
    def record_params(self, params: dict) -> None:
        _ = self.experiment
        self.journal.append("params", params={key: param_value(key, value) for key, value in params.items()})

    @rank_zero_only
    def record_tags(self, tags: dict) -> None:
        _ = self.experiment
        self.journal.append("tags", tags={key: str(value) for key, value in tags.items()})

    @rank_zero_only
    def record_inputs(self, datasets: list[dict]) -> None:
        _ = self.experiment
        self.journal.append("inputs", datasets=datasets)

    def artifact_file(self, artifact_file: str) -> Path:
        path = self.folder / "artifacts" / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @rank_zero_only
    def record_file(self, path: Path, artifact_dir: str | None = None) -> None:
        """A file of the run folder, uploaded under `artifact_dir` of the run's artifacts."""
        self.journal.append("artifact", local=str(Path(path).relative_to(self.folder)), path=artifact_dir)

    @rank_zero_only
    def record_text(self, text: str, artifact_file: str) -> None:
        path = self.artifact_file(artifact_file)
        path.write_text(redact(text), encoding="utf-8")
        self.record_file(path, os.path.dirname(artifact_file) or None)

    @rank_zero_only
    def record_figure(self, figure, artifact_file: str) -> None:
        path = self.artifact_file(artifact_file)
        figure.savefig(path)  # a matplotlib Figure, never pyplot's: nothing to close
        self.record_file(path, os.path.dirname(artifact_file) or None)

    @rank_zero_only
    def record_model(self, model, tokenizer) -> None:
        """Saves model and tokenizer into the run folder (safetensors); the sender logs them in MLflow's format."""
        folder = self.folder / "model"
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        self.journal.append("model", local="model")

    @rank_zero_only
    def record_registration(self, name: str, alias: str, metric: str) -> None:
        self.journal.append("register", name=name, alias=alias, metric=metric)

    # Checkpoints cover metric points; the end of the run sends what is left.

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        if self.journal is not None and self.checkpoint_step is not None:
            self.journal.cover(last_step_held(self.checkpoint_step))
        if self._log_model and checkpoint_callback.monitor and checkpoint_callback.best_model_path:
            self.best_checkpoint = checkpoint_callback.best_model_path

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if self.journal is None or self.ended:
            return
        if status == "finished":
            # Lightning's SLURM handler, about to save a checkpoint of this very step and requeue the job,
            # which comes back to this run: send what that checkpoint holds, and only that.
            self.journal.cover(self.journal.last_step())
            self.flush(everything=False)
            return
        if status == "success" and self.held_open:
            self.flush()  # the fit is over; its test follows in the same run
            return
        if self._log_model and self.best_checkpoint and os.path.exists(self.best_checkpoint):
            self.record_file(Path(self.best_checkpoint), Path(self.best_checkpoint).stem)
            self.best_checkpoint = None
        if self.failure:
            self.record_tags({FAILURE_TAG: self.failure})
        if self.interrupted and self.journal.covered_step > -math.inf:
            # Stopped at once (a second Ctrl-C): the record ends where the last checkpoint does, so the run can resume.
            self.journal.drop_unsent_after(int(self.journal.covered_step))
        self.stop_system_metrics()
        final = "FINISHED" if status == "success" else ("KILLED" if self.interrupted else "FAILED")
        self.journal.append("status", status=final)
        self.ended = True
        if self.flush(stop=True):
            self.journal.close()  # all sent: `emo sync` in another process may read it
        # else the sender keeps trying while this process lives (a sweep's next trials), holding the journal
        if self.interrupted:
            print(
                f"emo: run {self.run_id} stopped; continue it with the same command and --ckpt_path last",
                file=sys.stderr,
            )

    def flush(self, stop: bool = False, everything: bool = True) -> bool:
        """Sends what is left, waiting `flush_timeout_s` at most; what the server did not take stays in the journal."""
        done = self.sender.stop(self.flush_timeout_s) if stop else self.sender.flush(self.flush_timeout_s, everything)
        if self.background_sync is not None and stop:
            self.background_sync.join(self.flush_timeout_s)
        self.check_sender()
        if not done and not self.sender.failure:
            print(
                f"emo: warning: the tracking server at {redact(self._tracking_uri)} did not take {self.journal.unsent} "
                f"records of run {self.run_id} in {self.flush_timeout_s:.0f} s; they are kept in {self.folder} and "
                f"`emo sync` sends them (so does the next `emo fit` with the same output folder)",
                file=sys.stderr,
            )
        return done

    def send_the_rest(self, timeout_s: float) -> bool:
        """Records an outage kept back at the run's end, sent while this process lives (a sweep waits for them
        before its next trial); True once all arrived and the journal is closed."""
        if self.journal is None or self.journal.closed:
            return True
        done = self.sender.stop(timeout_s)
        if done:
            self.journal.close()
        return done

    def check_sender(self) -> None:
        """A sender that stopped for another reason than an outage fails the run, once, with the cause."""
        if self.sender is not None and self.sender.failure and not self.sender_failure_reported:
            self.sender_failure_reported = True
            raise RecordsNotSent(
                f"run {self.run_id}: {self.sender.failure}; {self.journal.unsent} records are kept in "
                f"{self.folder} for `emo sync` once that is fixed"
            )


def run_name(model_name_or_path: str, learning_rate: float | None, now: datetime.datetime | None = None) -> str:
    """A name that says what ran and tells runs apart: `all-minilm-l6-v2-lr1e-4-1201-1403-5c2e`.

    Model folder, learning rate (where the optimizer has one), month, day, hour and minute, and four hex digits from
    the system's entropy (MLflow's own names come from Python's `random`, which the seed has just set: the same name
    every time).
    """
    rate = ""
    if learning_rate is not None:
        mantissa, exponent = f"{learning_rate:e}".split("e")
        rate = f"-lr{float(mantissa):g}e{int(exponent)}"
    when = (now or datetime.datetime.now()).strftime("%m%d-%H%M")
    model = Path(str(model_name_or_path).rstrip("/")).name.lower() or "model"
    return f"{model}{rate}-{when}-{secrets.token_hex(2)}"


def journal_logger(trainer: Trainer) -> JournalLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, JournalLogger)), None)
