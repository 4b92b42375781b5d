"""A study's MLflow parent run (`ParentRun`): created once, by the first process (a claim decides which), continued by
the others and by reruns. A sweep's (`SweepParent`) holds the sweep's settings, the best trial, the mean and std over
the trials (for seeds), what the sweep learnt (parameter importances), the registered version and the report; an
audit's is `emo.audit`'s."""

import os
import statistics
import sys
import tempfile
from pathlib import Path

import optuna
import yaml
from mlflow.entities import RunTag
from optuna.trial import TrialState

from emo.redact import redact
from emo.report import write_report
from emo.report.importance import write_sweep_analysis
from emo.selection import best_index
from emo.spec import (
    AGGREGATED_RUNS_TAG,
    BEST_RUN_TAG,
    BEST_TRIAL_TAG,
    REGISTERED_VERSION_TAG,
    SWEEP_ANALYSIS_ARTIFACTS,
    SWEEP_TAG,
    TRIAL_TEMPLATE_ARTIFACT,
)
from emo.store import (
    PatientClient,
    find_or_create_experiment,
    kept_validation,
    log_params,
    patiently,
    register_once,
    test_metrics,
)
from emo.sweep.queue import Claims
from emo.sweep.settings import SweepSettings

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # on the study, for people and tools that read it
RUN_ATTR = "mlflow_run_id"  # on each trial: its MLflow run


class ParentRun:
    """The parent run of a study's trials, named `name`, created with `tags` in experiment `experiment_name`.

    `client` waits out tracking outages (`emo.store.PatientClient`), as the trials' journals do. `describe` records,
    once, what the study is; subclasses add to it.
    """

    def __init__(
        self, client: PatientClient, claims: Claims, study: optuna.Study, experiment_name: str, name: str, tags
    ):
        self.client = client
        self.claims = claims
        self.study = study
        self.experiment_name = experiment_name
        self.name = name
        self.tags = tags
        self.run_id = self.find_or_create()

    def find_or_create(self) -> str:
        run_id = self.claims.value("parent-run")
        if run_id is None:
            experiment_id = find_or_create_experiment(self.client, self.experiment_name)
            candidate = self.client.create_run(experiment_id, run_name=self.name, tags=self.tags).info.run_id
            if self.claims.claim("parent-run", candidate):
                self.describe(candidate)
                return candidate
            self.client.delete_run(candidate)  # another process was first
            run_id = self.claims.value("parent-run")
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def describe(self, run_id: str) -> None:
        self.study.set_user_attr(PARENT_RUN_ATTR, run_id)

    def stopped(self) -> None:
        """The process stops before the study is complete: the parent run shows it (a rerun continues it)."""
        self.client.set_terminated(self.run_id, status="KILLED")

    def ended(self) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED")


class SweepParent(ParentRun):
    """A sweep's parent run: its settings as params, the trials' template, and when the study is complete the best
    trial (`emo.selection`), what the sweep learnt, the registered best model and the report."""

    def __init__(self, client: PatientClient, claims: Claims, study: optuna.Study, settings: SweepSettings, template):
        self.settings = settings
        self.template = template
        experiment = template["trainer"]["logger"]["init_args"]["experiment_name"]
        super().__init__(client, claims, study, experiment, settings.study_name, {SWEEP_TAG: settings.study_name})

    def describe(self, run_id: str) -> None:
        super().describe(run_id)
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
        self.client.log_text(run_id, redact(yaml.safe_dump(self.template, sort_keys=False)), TRIAL_TEMPLATE_ARTIFACT)

    def patiently(self, call, *args, what: str, **kwargs):
        return patiently(call, *args, uri=self.client.tracking_uri, what=what, **kwargs)

    def finish(self) -> None:
        """Once per best trial and number of finished trials (a rerun that adds trials updates them): record the best
        trial, the mean and std, what the sweep learnt, register the best model, report."""
        complete = sorted(self.study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]), key=lambda t: t.number)
        best, finished = complete[best_index([t.value for t in complete], self.settings.metric)], len(complete)
        if self.claims.claim(f"finish-{best.number}-{finished}", str(os.getpid())):
            best_run_id = best.user_attrs[RUN_ATTR]
            self.client.set_tag(self.run_id, BEST_RUN_TAG, best_run_id)
            self.client.set_tag(self.run_id, BEST_TRIAL_TAG, str(best.number))
            # Tags, not params: a rerun that adds trials may find another best trial, and MLflow's params never change.
            self.client.log_batch(self.run_id, tags=[RunTag(f"best.{k}", str(v)) for k, v in best.params.items()])
            for name, value in self.scores(best_run_id).items():
                if value is not None:
                    self.client.log_metric(self.run_id, f"best/{name}", value)
            if self.settings.aggregate:
                self.log_mean_and_std()
            self.log_what_the_sweep_learnt()
            registry = self.template["registry"]
            if self.settings.register_best and registry["registered_model_name"]:
                name = registry["registered_model_name"]
                self.patiently(
                    register_once,
                    self.client.client,
                    best_run_id,
                    name,
                    registry["champion_alias"],
                    registry["champion_metric"],
                    what="registering the best model",
                )
                [version] = self.client.search_model_versions(f"name='{name}' and run_id='{best_run_id}'")
                self.client.set_tag(self.run_id, REGISTERED_VERSION_TAG, version.version)
            if self.settings.report:
                self.patiently(
                    write_report,
                    self.experiment_name,
                    parent_run_id=self.run_id,
                    metric=self.settings.metric,
                    client=self.client.client,
                    what="writing the report",
                )
        self.ended()

    def log_what_the_sweep_learnt(self) -> None:
        """`sweep/`: the parameter importances (json, md, png; or the line why there are none), the parallel
        coordinates and the optimisation history; each importance also as the metric `importance/<setting>`."""
        with tempfile.TemporaryDirectory() as folder:
            record = write_sweep_analysis(self.study, Path(folder), self.settings.metric)
            self.client.log_artifacts(self.run_id, folder, SWEEP_ANALYSIS_ARTIFACTS)
        for name, value in record.get("importances", {}).items():
            self.client.log_metric(self.run_id, f"importance/{name}", value)
        if "reason" in record:
            print(
                f"emo: sweep {self.settings.study_name}: no parameter importances: {record['reason']}", file=sys.stderr
            )

    def scores(self, run_id: str) -> dict[str, float | None]:
        """Validation at the run's kept checkpoint, and test."""
        run = self.client.get_run(run_id)
        return {**kept_validation(self.client, run), **test_metrics(run)}

    def log_mean_and_std(self) -> None:
        """Over the complete trials: `mean/<metric>` and `std/<metric>` (sample std, n - 1)."""
        per_run = [
            self.scores(trial.user_attrs[RUN_ATTR])
            for trial in self.study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
        ]
        for name in sorted({name for scores in per_run for name in scores}):
            values = [scores[name] for scores in per_run if scores.get(name) is not None]
            self.client.log_metric(self.run_id, f"mean/{name}", statistics.fmean(values))
            if len(values) > 1:
                self.client.log_metric(self.run_id, f"std/{name}", statistics.stdev(values))
        self.client.set_tag(self.run_id, AGGREGATED_RUNS_TAG, str(len(per_run)))
