"""`python -m emo sweep`: an Optuna study whose trials are ordinary `emo fit` runs, nested in MLflow.

    python -m emo sweep --config configs/sweep.yaml [--config configs/offline.yaml] [--trainer.* ...]

The sweep file holds a `sweep:` section and names the training configs it builds on; training
options given here apply to every trial. Each trial is `EmoCLI` on a complete config written to
`outputs/sweeps/<study>/trial-<n>.yaml` (`emo fit --config` that file reruns it), logged as a
child of the sweep's parent run. Processes that share the study's Optuna storage share its
trials; rerunning a sweep continues its study and its parent run.
"""

import json
import sys
import time
from pathlib import Path

import mlflow
import optuna
from jsonargparse import ArgumentParser
from optuna.trial import TrialState

from emo import UserError
from emo.arguments import check_config_files
from emo.fit import LOGGER_CLASS, EmoCLI, lightning_errors
from emo.quiet import quiet_libraries
from emo.store import PatientClient, prepare_tracking, resolve_tracking_uri, wait_for_server
from emo.sweep.parent import SweepParent
from emo.sweep.queue import INTERRUPTED_ATTR, TrialQueue, heartbeat
from emo.sweep.settings import SweepSettings, sweep_problem
from emo.sweep.trials import TrialPruning, fit_trial, trial_config


class StudyCLI(EmoCLI):
    """The `fit` options of a study's trials (a sweep's, an audit's) and the study's own section (`section`): parses
    and checks; trials instantiate the rest."""

    section = ""

    def __init__(self, args):
        super().__init__(args=args, run=False)

    def trial_template(self) -> dict:
        """The resolved training config that every trial starts from (without the study's own section)."""
        config = self.config.clone().as_dict()
        for key in ("config", self.section):
            config.pop(key, None)
        return json.loads(json.dumps(config))  # plain types (PositiveFloat -> float) for YAML


class SweepCLI(StudyCLI):
    """The `fit` options plus a `sweep:` section."""

    section = "sweep"

    def add_arguments_to_parser(self, parser):
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(SweepSettings, "sweep", instantiate=False)

    def before_instantiate_classes(self):
        super().before_instantiate_classes()
        problem = sweep_problem(self.config, LOGGER_CLASS)
        if problem:
            self.parser.error(problem)

    def instantiate_classes(self):
        parser = ArgumentParser()
        parser.add_class_arguments(SweepSettings, "sweep")
        self.settings = parser.instantiate(parser.parse_object({"sweep": self.config.sweep.as_dict()})).sweep


class Sweep:
    """One process's share of a study: take the next trial, fit it, tell Optuna (`run`). `parent` makes the study's
    parent run from (client, claims, study): a sweep's by default (`SweepParent`)."""

    def __init__(self, settings: SweepSettings, template: dict, parent=None):
        self.settings = settings
        self.template = template
        self.folder = Path(template["trainer"].get("default_root_dir") or ".") / "sweeps" / settings.study_name
        self.client = PatientClient(mlflow.MlflowClient(resolve_tracking_uri()))
        self.trial_loggers = []  # of the trials run here, whose records may wait for the server
        self.queue = TrialQueue(
            settings.storage,
            settings.study_name,
            settings.sampler,
            settings.pruner,
            settings.direction,
            settings.n_trials,
            settings.grid,
            settings.trial_heartbeat_s,
            settings.trial_grace_s,
        )
        self.study = self.queue.study
        make_parent = parent or (lambda client, claims, study: SweepParent(client, claims, study, settings, template))
        self.parent = make_parent(self.client, self.queue.claims, self.study)

    @property
    def parent_run_id(self) -> str:
        return self.parent.run_id

    def run(self) -> bool:
        """Runs trials until none is left to take; True when the study is complete (its parent may then finish)."""
        try:
            while True:
                wait_for_server(self.client.tracking_uri)  # an outage between trials: wait, as the journal does
                self.send_kept_records()
                trial = self.queue.next_trial()  # taken only now: a waiting process holds no trial
                if trial is None and self.queue.others_running():
                    # Nothing left to take, but other processes run trials: wait until they finish, or until one's
                    # heartbeat goes stale (its process died) and it is queued again for this process to run.
                    time.sleep(self.settings.trial_heartbeat_s)
                    continue
                if trial is None:
                    break
                self.run_trial(trial)
        except BaseException:
            self.parent.stopped()
            raise
        return self.queue.complete()

    def send_kept_records(self) -> None:
        """Records that an outage kept back at the end of earlier trials arrive before the sweep goes on."""
        for logger in self.trial_loggers:
            if not logger.send_the_rest(timeout_s=600):
                print(
                    f"emo: warning: run {logger.run_id} still has records in {logger.folder}; `emo sync` sends them",
                    file=sys.stderr,
                )
        self.trial_loggers = []

    def run_trial(self, trial: optuna.Trial) -> None:
        pruning = TrialPruning(trial, monitor=self.settings.metric)
        with heartbeat(self.queue.storage, self.queue.trial_id(trial.number)):
            try:
                config = trial_config(trial, self.settings, self.template, self.parent.run_id, self.folder)
                value = fit_trial(trial, config, pruning, self.client)
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
            finally:
                if pruning.logger is not None:
                    self.trial_loggers.append(pruning.logger)
        self.study.tell(trial, value)


def main(args: list[str]) -> None:
    quiet_libraries()
    check_config_files(args)
    with lightning_errors():
        cli = SweepCLI(args)
        template = cli.trial_template()
        prepare_tracking(resolve_tracking_uri(), template["trainer"]["logger"]["init_args"]["experiment_name"])
        try:
            sweep = Sweep(cli.settings, template)
            if sweep.run():
                sweep.parent.finish()
        except KeyboardInterrupt:
            raise SystemExit("emo: sweep interrupted; run the same command again to continue it") from None
