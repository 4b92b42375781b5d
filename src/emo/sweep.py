"""`python -m emo sweep`: an Optuna study whose trials are ordinary `emo fit` runs, nested in MLflow.

    python -m emo sweep --config configs/sweep.yaml [--config configs/offline.yaml] [--trainer.* ...]

The sweep file holds a `sweep:` section and names the training configs it builds on; training
options given here apply to every trial. Each trial is `EmoCLI` on a complete config written to
`outputs/sweeps/<study>/trial-<n>.yaml` (`emo fit --config` that file reruns it), logged as a
child of the sweep's parent run. Processes that share the study's Optuna storage share its
trials; rerunning a sweep continues its study and its parent run.
"""

import contextlib
import copy
import dataclasses
import itertools
import json
import math
import os
import socket
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Literal

import mlflow
import optuna
import sqlalchemy
import yaml
from jsonargparse import ArgumentParser
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from emo import UserError
from emo.cli import EmoCLI
from emo.redact import redact
from emo.registry import register
from emo.report import best_step_metrics, write_report
from emo.tracking import MLflowLogger, flatten, log_params, prepare_tracking, resolve_tracking_uri

warnings.filterwarnings("ignore", category=ExperimentalWarning)  # heartbeats: stable in use, "experimental" in name

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # on the study, for people and tools that read it
RUN_ATTR = "mlflow_run_id"  # on each trial
INTERRUPTED_ATTR = "interrupted"  # on a trial stopped by Ctrl-C or SIGTERM: it runs again
HEARTBEAT_S, GRACE_S = 30, 120  # a trial of a killed process is failed (and run again) after the grace period


@dataclasses.dataclass
class Range:
    """Numbers from `low` to `high`: ints when both ends are ints (and not `log`), else floats."""

    low: float
    high: float
    log: bool = False
    step: float | None = None


class SweepSettings:
    """The `sweep:` section of a sweep config.

    Args:
        study_name: Optuna study and MLflow parent run; rerunning with the same name continues it.
        storage: Optuna storage (an RDB URL), shared by every process working on the study.
        params: The search space, keyed by option (`model.learning_rate`): a list of values or a Range.
        sampler: An Optuna sampler; `null` is a grid over the listed values.
        pruner: An Optuna pruner, fed `metric` after every validation; `null` never prunes.
        n_trials: Trials of the whole study, all processes together; `null`: the grid's size.
        metric: Validation metric that ranks the trials; the checkpoint monitor.
        direction: `maximize` or `minimize` the metric.
        register_best: Register the best trial's model when the study is complete.
        report: Write and log the sweep report when the study is complete.
        aggregate: Also log the mean and standard deviation of the trials' metrics in the parent
            run (`mean/test/acc`, `std/test/acc`, ...): for a sweep over seeds (configs/seeds.yaml).
    """

    def __init__(
        self,
        study_name: str = "emotion-sweep",
        storage: str = "sqlite:///optuna.db",
        params: dict[str, list[bool | int | float | str] | Range] | None = None,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        n_trials: int | None = None,
        metric: str = "val/f1_weighted",
        direction: Literal["maximize", "minimize"] = "maximize",
        register_best: bool = True,
        report: bool = True,
        aggregate: bool = False,
    ):
        self.study_name = study_name
        self.storage = storage
        self.params = params or {}
        lists = {k: v for k, v in self.params.items() if isinstance(v, list)}
        # A grid: every combination once, in the listed order (each trial is queued with its values).
        self.grid = [dict(zip(lists, values, strict=True)) for values in itertools.product(*lists.values())]
        if sampler or len(lists) != len(self.params):
            self.grid = []
        self.sampler = sampler or optuna.samplers.TPESampler(seed=0)
        self.pruner = pruner or optuna.pruners.NopPruner()
        self.n_trials = n_trials or len(self.grid) or 10
        self.metric = metric
        self.direction = direction
        self.register_best = register_best
        self.report = report
        self.aggregate = aggregate


def suggest(trial: optuna.Trial, name: str, space) -> float | int | str | bool:
    if isinstance(space, list):
        return trial.suggest_categorical(name, space)
    if not space.log and all(isinstance(v, int) for v in (space.low, space.high)):
        return trial.suggest_int(name, space.low, space.high, step=int(space.step or 1))
    return trial.suggest_float(name, space.low, space.high, log=space.log, step=space.step)


def set_option(config: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        config = config[key]
    config[leaf] = value


class SweepCLI(EmoCLI):
    """The `fit` options plus a `sweep:` section: parses and checks; trials instantiate the rest."""

    def __init__(self, args):
        super().__init__(args=args, run=False)

    def add_arguments_to_parser(self, parser):
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(SweepSettings, "sweep", instantiate=False)

    def before_instantiate_classes(self):
        super().before_instantiate_classes()
        problem = sweep_problem(self.config)
        if problem:
            self.parser.error(problem)

    def instantiate_classes(self):
        parser = ArgumentParser()
        parser.add_class_arguments(SweepSettings, "sweep")
        self.settings = parser.instantiate_classes(parser.parse_object({"sweep": self.config.sweep.as_dict()})).sweep

    def trial_template(self) -> dict:
        """The resolved training config that every trial starts from."""
        config = self.config.clone().as_dict()
        for key in ("sweep", "config"):
            config.pop(key, None)
        return json.loads(json.dumps(config))  # plain types (PositiveFloat -> float) for YAML


def sweep_problem(config) -> str | None:
    sweep = config.sweep
    if not sweep.params:
        return "--sweep.params: give a search space, e.g. {model.learning_rate: [1.0e-5, 2.0e-5, 5.0e-5]}"
    options = set(flatten(config.clone().as_dict()))
    unknown = [name for name in sweep.params if name not in options]
    if unknown:
        return f"--sweep.params: no option named {', '.join(unknown)}"
    if sweep.metric != config.checkpoint.monitor:
        return f"--sweep.metric {sweep.metric!r} must be the checkpoint monitor ({config.checkpoint.monitor!r})"
    if (sweep.direction == "maximize") != (config.checkpoint.mode == "max"):
        return f"--sweep.direction {sweep.direction} contradicts --checkpoint.mode {config.checkpoint.mode}"
    logger = config.trainer.logger
    if not logger or getattr(logger, "class_path", None) != f"{MLflowLogger.__module__}.{MLflowLogger.__name__}":
        return "a sweep nests its trials in MLflow: --trainer.logger must be emo.tracking.MLflowLogger"
    if str(config.trainer.devices) not in ("1", "auto") or config.trainer.strategy not in ("auto", None):
        return "trials run in this process on one device; scale a sweep out by starting more `emo sweep` processes"
    grid_size = math.prod(len(v) for v in sweep.params.values() if isinstance(v, list))
    is_grid = not sweep.sampler and all(isinstance(v, list) for v in sweep.params.values())
    if is_grid and sweep.n_trials and sweep.n_trials > grid_size:
        return f"--sweep.n_trials {sweep.n_trials}: the grid has {grid_size} points; each runs once"
    return None


class TrialPruning(PyTorchLightningPruningCallback):
    """Optuna's pruning callback; also notes the trial's MLflow run on the trial as soon as it exists.

    An interrupted trial's copy (queued by `retry_once`) inherits that note and continues the run
    from its last checkpoint.
    """

    run_id: str | None = None

    def on_fit_start(self, trainer, pl_module):
        super().on_fit_start(trainer, pl_module)
        self.run_id = trainer.logger.run_id
        self._trial.set_user_attr(RUN_ATTR, self.run_id)


class Claims:
    """Decisions that exactly one process of a study may take, kept in the study's own database.

    A claim is a row whose primary key is (study, what): of processes that insert the same row
    at the same instant the database accepts one, so "who creates the parent run", "who runs
    grid point 3" and "who registers the best model" have one answer whatever the timing.
    """

    def __init__(self, engine, study_name: str):
        self.engine = engine
        self.study_name = study_name
        self.table = sqlalchemy.Table(
            "emo_sweep_claims",
            sqlalchemy.MetaData(),
            sqlalchemy.Column("study_name", sqlalchemy.String(512), primary_key=True),
            sqlalchemy.Column("claim", sqlalchemy.String(128), primary_key=True),
            sqlalchemy.Column("value", sqlalchemy.String(512), nullable=False),
        )
        with contextlib.suppress(sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
            self.table.create(engine, checkfirst=True)  # another process may create it at the same time

    def claim(self, what: str, value: str = "") -> bool:
        try:
            with self.engine.begin() as connection:
                connection.execute(self.table.insert().values(study_name=self.study_name, claim=what, value=value))
        except sqlalchemy.exc.IntegrityError:
            return False
        return True

    def value(self, what: str) -> str | None:
        query = sqlalchemy.select(self.table.c.value).where(
            self.table.c.study_name == self.study_name, self.table.c.claim == what
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalar()


def open_storage(url: str, retry) -> RDBStorage:
    """Optuna's storage; processes that create a new database at the same instant race, so try again."""
    for attempt in range(5):
        try:
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, heartbeat_stale_trial_callback=retry)
        except sqlalchemy.exc.SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


@contextlib.contextmanager
def heartbeat(storage: RDBStorage, trial_id: int):
    """Optuna's trial heartbeat, as `study.optimize` keeps it: a killed process's trial goes stale."""
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried; only a long silence counts
                storage.record_heartbeat(trial_id)
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Sweep:
    def __init__(self, settings: SweepSettings, template: dict):
        self.settings = settings
        self.template = template
        self.experiment_name = template["trainer"]["logger"]["init_args"]["experiment_name"]
        self.registry = template["registry"]
        self.folder = Path(template["trainer"].get("default_root_dir") or ".") / "sweeps" / settings.study_name
        self.client = mlflow.MlflowClient(resolve_tracking_uri())
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=2)
        self.storage = open_storage(settings.storage, self.retry_once)  # retry_once needs self.claims, set below
        self.study = optuna.create_study(
            study_name=settings.study_name,
            storage=self.storage,
            sampler=settings.sampler,
            pruner=settings.pruner,
            direction=settings.direction,
            load_if_exists=True,
        )
        self.study_id = self.storage.get_study_id_from_name(settings.study_name)
        self.claims = Claims(self.storage.engine, settings.study_name)
        self.parent_run_id = self.parent_run()

    def parent_run(self) -> str:
        """The study's parent run: the first process's, continued by the others and by reruns."""
        run_id = self.claims.value("parent-run")
        if run_id is None:
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            experiment_id = experiment.experiment_id if experiment else self.create_experiment()
            tags = {"emo.sweep": self.settings.study_name}
            candidate = self.client.create_run(experiment_id, run_name=self.settings.study_name, tags=tags).info.run_id
            if self.claims.claim("parent-run", candidate):
                self.describe_parent(candidate)
                return candidate
            self.client.delete_run(candidate)  # another process was first
            run_id = self.claims.value("parent-run")
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def create_experiment(self) -> str:
        try:
            return self.client.create_experiment(self.experiment_name)
        except mlflow.exceptions.MlflowException:  # created by another process meanwhile
            return self.client.get_experiment_by_name(self.experiment_name).experiment_id

    def describe_parent(self, run_id: str) -> None:
        self.study.set_user_attr(PARENT_RUN_ATTR, run_id)
        settings = {
            "study_name": self.settings.study_name,
            "storage": self.settings.storage,
            "sampler": type(self.settings.sampler).__name__ if not self.settings.grid else "grid",
            "pruner": type(self.settings.pruner).__name__,
            "n_trials": self.settings.n_trials,
            "metric": self.settings.metric,
            "direction": self.settings.direction,
            **{f"params.{k}": v for k, v in self.settings.params.items()},
        }
        log_params(self.client, run_id, {f"sweep.{k}": v for k, v in settings.items()})
        self.client.log_text(run_id, redact(yaml.safe_dump(self.template, sort_keys=False)), "trial_template.yaml")

    # Trials. Every trial is queued (WAITING) before it runs and a process takes it by moving it
    # to RUNNING, which Optuna's storage lets exactly one process do. New trials are queued per
    # claimed slot (slot i of n_trials: grid point i, or a sampler's pick), so the study never
    # holds more than n_trials, nor a grid point twice.

    def take_waiting_trial(self) -> optuna.Trial | None:
        # Optuna's own WAITING -> RUNNING step is atomic on PostgreSQL and MySQL but not on SQLite: claim first.
        for waiting in self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.WAITING,)):
            if not self.claims.claim(f"take-{waiting.number}", str(os.getpid())):
                continue
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, waiting.number)
            self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
            return optuna.Trial(self.study, trial_id)
        return None

    def queue_next_slot(self) -> bool:
        for slot in range(self.settings.n_trials):
            if self.claims.claim(f"slot-{slot}", str(os.getpid())):
                self.study.enqueue_trial(self.settings.grid[slot] if self.settings.grid else {})
                return True
        return False

    def retry_once(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Queues a copy of a stopped trial (Optuna's retry callback), once whatever the number of processes."""
        if self.claims.claim(f"retry-{trial.number}", str(os.getpid())):
            self.retry(study, trial)

    def requeue_stopped_trials(self) -> None:
        """Trials of killed processes (stale heartbeat) and interrupted ones run again."""
        fail_stale_trials(self.study)  # calls retry_once for each trial it fails
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if trial.user_attrs.get(INTERRUPTED_ATTR):
                self.retry_once(self.study, trial)

    def next_trial(self) -> optuna.Trial | None:
        self.requeue_stopped_trials()
        while True:
            trial = self.take_waiting_trial()
            if trial is not None or not self.queue_next_slot():
                return trial

    def run_trial(self, trial: optuna.Trial) -> None:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        with heartbeat(self.storage, trial_id):
            try:
                value = self.objective(trial)
            except optuna.TrialPruned:
                self.study.tell(trial, state=TrialState.PRUNED)
                return
            except UserError as error:  # a trial's own failure (a NaN loss): recorded, and the sweep goes on
                print(f"emo: trial {trial.number} failed: {error}", file=sys.stderr)
                self.study.tell(trial, state=TrialState.FAIL)
                return
            except BaseException:
                trial.set_user_attr(INTERRUPTED_ATTR, True)
                self.study.tell(trial, state=TrialState.FAIL)
                raise
        self.study.tell(trial, value)

    def trial_config(self, trial: optuna.Trial) -> Path:
        config = copy.deepcopy(self.template)
        for name, space in self.settings.params.items():
            set_option(config, name, suggest(trial, name, space))
        logger = config["trainer"]["logger"]["init_args"]
        logger["run_name"] = f"{self.settings.study_name}-trial-{trial.number}"
        logger["tags"] = {
            **(logger.get("tags") or {}),
            MLFLOW_PARENT_RUN_ID: self.parent_run_id,
            "optuna.study": self.settings.study_name,
            "optuna.trial": str(trial.number),
            "emo.worker": f"{socket.gethostname()}:{os.getpid()}",  # which sweep process ran it
        }
        config["registry"]["registered_model_name"] = None  # only the best trial's model, at the end
        interrupted = self.last_checkpoint_of(trial.user_attrs.get(RUN_ATTR))
        if interrupted:
            config["ckpt_path"] = str(interrupted)  # the retry of an interrupted trial continues its run
        path = self.folder / f"trial-{trial.number}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def last_checkpoint_of(self, run_id: str | None) -> Path | None:
        root = Path(self.template["trainer"].get("default_root_dir") or ".")
        found = sorted(root.glob(f"*/{run_id}/checkpoints/last.ckpt")) if run_id else []
        return found[0] if found else None

    def objective(self, trial: optuna.Trial) -> float:
        pruning = TrialPruning(trial, monitor=self.settings.metric)
        try:
            cli = EmoCLI(args=["fit", "--config", str(self.trial_config(trial))], callbacks=[pruning])
        except SystemExit as stop:  # Lightning exits on Ctrl-C
            raise KeyboardInterrupt(f"trial {trial.number} interrupted") from stop
        except optuna.TrialPruned:
            trial.set_user_attr(RUN_ATTR, pruning.run_id)
            self.client.set_tag(pruning.run_id, "optuna.trial.state", "PRUNED")
            self.client.set_terminated(pruning.run_id, status="KILLED")
            raise
        run_id = cli.trainer.logger.run_id
        trial.set_user_attr(RUN_ATTR, run_id)
        self.client.set_tag(run_id, "optuna.trial.state", "COMPLETE")
        return cli.trainer.checkpoint_callback.best_model_score.item()

    def run(self) -> None:
        try:
            while (trial := self.next_trial()) is not None:
                self.run_trial(trial)
        except BaseException:
            self.client.set_terminated(self.parent_run_id, status="KILLED")
            raise
        if self.complete():
            self.finish()

    def complete(self) -> bool:
        """Every slot ran to an end that a rerun would not change."""
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
            return False
        retried = {number for t in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(t)}
        settled = [t for t in trials if t.state != TrialState.FAIL or not (t.number in retried or t.user_attrs.get(INTERRUPTED_ATTR))]
        return len(settled) >= self.settings.n_trials

    def log_mean_and_std(self, parent: str) -> None:
        """Over the complete trials: validation at each one's kept checkpoint, and test (sample std, n - 1)."""
        maximize = self.settings.direction == "maximize"
        per_run = []
        for trial in self.study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
            run_id = trial.user_attrs[RUN_ATTR]
            metrics = self.client.get_run(run_id).data.metrics
            validation = best_step_metrics(self.client, run_id, self.settings.metric, maximize)
            per_run.append({**validation, **{k: v for k, v in metrics.items() if k.startswith("test/")}})
        names = sorted({name for metrics in per_run for name in metrics})
        for name in names:
            values = [metrics[name] for metrics in per_run if metrics.get(name) is not None]
            self.client.log_metric(parent, f"mean/{name}", statistics.fmean(values))
            if len(values) > 1:
                self.client.log_metric(parent, f"std/{name}", statistics.stdev(values))
        self.client.set_tag(parent, "emo.aggregated_runs", str(len(per_run)))

    def finish(self) -> None:
        """Once per study and best trial: record the best trial in the parent run, register its model, report."""
        parent = self.parent_run_id
        best = self.study.best_trial
        if self.claims.claim(f"finish-{best.number}", str(os.getpid())):
            best_run_id = best.user_attrs[RUN_ATTR]
            self.client.set_tag(parent, "emo.best_run_id", best_run_id)
            self.client.set_tag(parent, "emo.best_trial", str(best.number))
            log_params(self.client, parent, {f"best.{k}": v for k, v in best.params.items()})
            maximize = self.settings.direction == "maximize"
            validation = best_step_metrics(self.client, best_run_id, self.settings.metric, maximize)
            test = {k: v for k, v in self.client.get_run(best_run_id).data.metrics.items() if k.startswith("test/")}
            for name, value in {**validation, **test}.items():
                if value is not None:
                    self.client.log_metric(parent, f"best/{name}", value)
            if self.settings.aggregate:
                self.log_mean_and_std(parent)
            if self.settings.register_best and self.registry["registered_model_name"]:
                version, promoted = register(
                    best_run_id, self.registry["registered_model_name"], self.registry["champion_alias"], self.registry["champion_metric"]
                )
                self.client.set_tag(parent, "emo.registered_version", version.version)
            if self.settings.report:
                write_report(self.experiment_name, parent_run_id=parent, metric=self.settings.metric, client=self.client)
        self.client.set_terminated(parent, status="FINISHED")


def main(args=None) -> None:
    cli = SweepCLI(args)
    template = cli.trial_template()
    prepare_tracking(resolve_tracking_uri(), template["trainer"]["logger"]["init_args"]["experiment_name"])
    try:
        Sweep(cli.settings, template).run()
    except KeyboardInterrupt:
        raise SystemExit("emo: sweep interrupted; run the same command again to continue it") from None
