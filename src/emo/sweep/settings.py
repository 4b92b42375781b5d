"""A sweep's settings: the `sweep:` section of a sweep config, checked against the training options it varies."""

import dataclasses
import itertools
import math
from typing import Literal

import optuna
from jsonargparse.typing import PositiveInt

from emo.params import flatten
from emo.spec import is_maximized


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
        params: The search space, keyed by option as the run's params name it (`optimizer.init_args.lr`): a list of values or a Range.
        sampler: An Optuna sampler; `null` is a grid over the listed values.
        pruner: An Optuna pruner, fed `metric` after every validation; `null` never prunes.
        n_trials: Trials of the whole study, all processes together; `null`: the grid's size.
        metric: Validation metric that ranks the trials; the checkpoint monitor.
        direction: `maximize` or `minimize` the metric; `null`: the metric's own (a loss or an error is minimized).
        register_best: Register the best trial's model when the study is complete.
        report: Write and log the sweep report when the study is complete.
        aggregate: Also log the mean and standard deviation of the trials' metrics in the parent
            run (`mean/test/acc`, `std/test/acc`, ...): for a sweep over seeds (configs/seeds.yaml).
        trial_heartbeat_s: A process running a trial says so this often (in the Optuna storage).
        trial_grace_s: A trial whose process has been silent this long (killed, or its machine gone) runs again,
            once, in whichever process asks for a trial next; it continues its run from its last checkpoint.
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
        direction: Literal["maximize", "minimize"] | None = None,
        register_best: bool = True,
        report: bool = True,
        aggregate: bool = False,
        trial_heartbeat_s: PositiveInt = 30,
        trial_grace_s: PositiveInt = 120,
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
        self.direction = direction or metric_direction(metric)
        self.register_best = register_best
        self.report = report
        self.aggregate = aggregate
        self.trial_heartbeat_s = trial_heartbeat_s
        self.trial_grace_s = trial_grace_s


def metric_direction(metric: str) -> str:
    """Optuna's name for the direction in which `metric` gets better."""
    return "maximize" if is_maximized(metric) else "minimize"


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


def sweep_problem(config, logger_class: str) -> str | None:
    """A sweep that cannot run as asked, in one line; `logger_class` is the class path of emo's MLflow logger."""
    sweep = config.sweep
    if not sweep.params:
        return "--sweep.params: give a search space, e.g. {optimizer.init_args.lr: [1.0e-5, 2.0e-5, 5.0e-5]}"
    options = set(flatten(config.clone().as_dict()))
    unknown = [name for name in sweep.params if name not in options]
    if unknown:
        return f"--sweep.params: no option named {', '.join(unknown)}"
    if sweep.metric != config.checkpoint.monitor:
        return f"--sweep.metric {sweep.metric!r} must be the checkpoint monitor ({config.checkpoint.monitor!r})"
    if sweep.direction and sweep.direction != metric_direction(sweep.metric):
        return f"--sweep.direction {sweep.direction} is the wrong direction for {sweep.metric!r}"
    logger = config.trainer.logger
    if not logger or getattr(logger, "class_path", None) != logger_class:
        return f"a sweep nests its trials in MLflow: --trainer.logger must be {logger_class}"
    if str(config.trainer.devices) not in ("1", "auto") or config.trainer.strategy not in ("auto", None):
        return "trials run in this process on one device; scale a sweep out by starting more `emo sweep` processes"
    grid_size = math.prod(len(v) for v in sweep.params.values() if isinstance(v, list))
    is_grid = not sweep.sampler and all(isinstance(v, list) for v in sweep.params.values())
    if is_grid and sweep.n_trials and sweep.n_trials > grid_size:
        return f"--sweep.n_trials {sweep.n_trials}: the grid has {grid_size} points; each runs once"
    return None
