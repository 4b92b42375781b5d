"""A sweep over machines, for real: PostgreSQL as the Optuna storage and as the MLflow server's store, two workers
started at the same instant, one of them killed in the middle of a trial."""

import json
import os

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from helpers.data import ROOT, shrunk_args
from helpers.gates import gate_callback, wait_for_reached
from helpers.postgres import PostgresServer, bindir
from helpers.processes import start_emo
from helpers.secrets import file_texts, leaks, run_texts
from helpers.server import MlflowServer

pytestmark = pytest.mark.skipif(
    bindir() is None and not os.environ.get("EMO_CI"),
    reason="no PostgreSQL (pg_config): .ci/run installs Debian's postgresql; in CI this fails",
)
LEARNING_RATES = [1e-3, 2e-3, 3e-3, 4e-3]
# Passwords in the sweep's storage URL and in the tracking URL (the trust-authenticated cluster and the plain server
# ignore them): neither may reach the store, the run folders, the trial configs or what the workers print.
SECRETS = {"storage": "pgSweepS3cret-1", "tracking": "mlflowSweepS3cret-2"}


@pytest.fixture
def postgres():
    server = PostgresServer("optuna", "mlflow").start()
    yield server
    server.stop()


def test_two_workers_share_a_postgres_study_and_one_finishes_it_when_the_other_dies(
    tmp_path, tiny_model_dir, small_data_dir, postgres
):
    (tmp_path / "mlflow").mkdir()
    tracking = MlflowServer(tmp_path / "mlflow", backend_store_uri=postgres.url("mlflow")).start()
    name, gate = "postgres-sweep", tmp_path / "gate"
    args = ["sweep", *shrunk_args(
        tmp_path, tiny_model_dir, small_data_dir,
        "--trainer.logger.init_args.experiment_name", name, "--registry.registered_model_name", name,
        "--sweep.study_name", name, "--sweep.storage", postgres.url("optuna").replace("postgres@", f"postgres:{SECRETS['storage']}@"),
        "--sweep.params", json.dumps({"optimizer.init_args.lr": LEARNING_RATES}), "--sweep.pruner", "null",
        # a live trial beats every 2 s and is failed only after 30 s of silence: a margin that holds with both cores
        # busy; the killed worker's trial goes stale 30 s after its death, while the survivor runs the others
        "--sweep.trial_heartbeat_s", "2", "--sweep.trial_grace_s", "30", "--trainer.log_every_n_steps", "1",
        "--last_checkpoint.every_n_train_steps", "2",
        *gate_callback(gate, at_step=4, run_suffix="trial-1", once_per_folder=True),
        configs=["--config", str(ROOT / "configs/sweep.yaml"), "--config", str(ROOT / "configs/offline.yaml")],
    )]  # fmt: skip
    env = {"MLFLOW_TRACKING_URI": tracking.url.replace("://", f"://sweeper:{SECRETS['tracking']}@")}
    workers = [start_emo(args, tmp_path / f"worker-{i}.log", env=env) for i in range(2)]  # at the same instant
    try:
        [reached] = wait_for_reached(gate, processes=1, watch=workers)  # one of them runs trial 1: kill it there
        victim = next(w for w in workers if str(w.pid) == reached.name.split("-")[1])
        victim.kill()
        victim.wait(timeout=60)
        survivor = next(w for w in workers if w is not victim)
        log = tmp_path / f"worker-{workers.index(survivor)}.log"
        assert survivor.wait(timeout=720) == 0, log.read_text()[-3000:]

        trials = optuna.load_study(study_name=name, storage=postgres.url("optuna")).trials
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert sorted(t.params["optimizer.init_args.lr"] for t in complete) == LEARNING_RATES  # every grid point once
        assert [t.state for t in trials].count(TrialState.FAIL) == 1  # the killed one, run again by the survivor
        client = mlflow.MlflowClient(tracking.url)
        experiment_id = client.get_experiment_by_name(name).experiment_id
        [parent] = client.search_runs([experiment_id], filter_string=f"tags.`emo.sweep` = '{name}'")
        assert parent.info.status == "FINISHED"
        runs = client.search_runs([experiment_id])
        assert len(runs) == 1 + len(LEARNING_RATES) and not [r for r in runs if r.info.status == "RUNNING"]
        assert [v.run_id for v in client.search_model_versions(f"name='{name}'")] == [
            parent.data.tags["emo.best_run_id"]
        ]

        places = [place for run in runs for place in run_texts(client, run, tmp_path / "downloads")]
        places += file_texts(tmp_path / "outputs") + [
            (log.name, log.read_text()) for log in tmp_path.glob("worker-*.log")
        ]
        assert any(where.endswith(".ckpt") for where, _ in places) and any(
            "sweep.storage" in text for _, text in places
        )
        assert leaks(SECRETS, places) == []
    finally:
        tracking.kill()
