"""`emo sweep` against a real MLflow server: nested runs, best-trial registration, pruning, workers, resume."""

import json
import math
import signal
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
from optuna.trial import TrialState

from emo import report, sweep
from emo.report.importance import importances_lines, write_sweep_analysis
from emo.spec import MODEL_URI_TAG
from emo.store import mark_as_model_training
from helpers.data import DATA_DIR, ROOT, SHIPPED_SWEEP_CONFIGS, shrunk_args
from helpers.gates import gate_callback, open_gate, wait_for_reached
from helpers.processes import start_emo

SWEEP_CONFIGS = ["--config", str(ROOT / "configs/sweep.yaml"), "--config", str(ROOT / "configs/offline.yaml")]


def sweep_args(
    tmp_path, tiny_model_dir, small_data_dir, name: str, learning_rates: list[float], *extra: str
) -> list[str]:
    return shrunk_args(
        tmp_path, tiny_model_dir, small_data_dir,
        "--trainer.logger.init_args.experiment_name", name,
        "--registry.registered_model_name", name,
        "--sweep.study_name", name,
        "--sweep.storage", f"sqlite:///{tmp_path}/optuna.db",
        "--sweep.params", json.dumps({"optimizer.init_args.lr": learning_rates}),
        *extra, configs=SWEEP_CONFIGS,
    )  # fmt: skip


def children_of(client, parent_run_id: str) -> list:
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def best_val(client, run_id: str, metric: str = "val/f1_weighted") -> float:
    return max(m.value for m in client.get_metric_history(run_id, metric))


def the_parent(client, name: str):
    experiment = client.get_experiment_by_name(name)
    parents = client.search_runs([experiment.experiment_id], filter_string=f"tags.`emo.sweep` = '{name}'")
    assert len(parents) == 1
    return parents[0]


def test_grid_sweep_nests_trials_and_registers_only_the_best(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    name = "grid-sweep-test"
    learning_rates = [1e-3, 3e-3, 1e-2]
    # Enough steps for the tiny random model to tell these learning rates apart.
    sweep.main(
        sweep_args(
            tmp_path,
            tiny_model_dir,
            small_data_dir,
            name,
            learning_rates,
            "--sweep.pruner",
            "null",
            "--trainer.max_epochs",
            "8",
            "--data.batch_size",
            "8",
        )
    )

    client = mlflow.MlflowClient()
    parent = the_parent(client, name)
    children = children_of(client, parent.info.run_id)
    assert len(children) == 3
    assert sorted(c.info.run_name for c in children) == [
        f"{name}-trial-{n}" for n in range(3)
    ]  # sweeps keep trial names
    assert sorted(float(c.data.params["optimizer.init_args.lr"]) for c in children) == learning_rates
    assert all(c.info.status == "FINISHED" and "test/f1_weighted" in c.data.metrics for c in children)
    values = {c.info.run_id: best_val(client, c.info.run_id) for c in children}
    best = next(c for c in children if c.info.run_id == parent.data.tags["emo.best_run_id"])
    assert values[best.info.run_id] == max(values.values())  # the best (of equals, any one)
    assert parent.data.tags["best.optimizer.init_args.lr"] == best.data.params["optimizer.init_args.lr"]
    assert parent.data.metrics["best/val/f1_weighted"] == pytest.approx(best_val(client, best.info.run_id))
    assert len({best_val(client, c.info.run_id) for c in children}) > 1, "the trials should differ"
    assert parent.data.params["sweep.sampler"] == "grid" and parent.info.status == "FINISHED"
    versions = client.search_model_versions(f"name='{name}'")
    assert [(v.version, v.run_id) for v in versions] == [("1", best.info.run_id)]
    assert client.get_model_version_by_alias(name, "champion").run_id == best.info.run_id
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/metric_vs_params.png", "report/learning_curves.png"} <= report
    # each trial's config is the plain fit config that reruns it: the trial's own settings, not the template's
    trial = next(c for c in children if c.info.run_name == f"{name}-trial-0")
    rerun = yaml.safe_load((tmp_path / "outputs/sweeps" / name / "trial-0.yaml").read_text())
    assert "sweep" not in rerun and rerun["optimizer"]["init_args"]["lr"] == float(
        trial.data.params["optimizer.init_args.lr"]
    )
    assert rerun["data"]["data_dir"] == trial.data.params["data.data_dir"] == str(small_data_dir)
    assert rerun["trainer"]["max_epochs"] == int(trial.data.params["trainer.max_epochs"]) == 8


def test_a_seed_sweep_holds_mean_and_std_and_compares(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    name = "seeds-test"
    seeds = ["--config", str(ROOT / "configs/seeds.yaml"), "--config", str(ROOT / "configs/offline.yaml")]
    sweep.main(shrunk_args(tmp_path, tiny_model_dir, small_data_dir,
                           "--trainer.logger.init_args.experiment_name", name, "--sweep.study_name", name,
                           "--sweep.storage", f"sqlite:///{tmp_path}/optuna.db", "--sweep.params", '{"seed_everything": [1, 2]}',
                           "--optimizer.lr", "5e-3", "--trainer.max_epochs", "1", configs=seeds))  # fmt: skip
    client = mlflow.MlflowClient()
    parent = the_parent(client, name)
    children = children_of(client, parent.info.run_id)
    assert sorted(c.data.params["seed_everything"] for c in children) == ["1", "2"]
    for metric in ("test/acc", "test/f1_macro", "test/f1_weighted"):
        values = [c.data.metrics[metric] for c in children]
        assert parent.data.metrics[f"mean/{metric}"] == pytest.approx(sum(values) / 2)
        assert parent.data.metrics[f"std/{metric}"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    val = [max(m.value for m in client.get_metric_history(c.info.run_id, "val/f1_weighted")) for c in children]
    assert parent.data.metrics["mean/val/f1_weighted"] == pytest.approx(sum(val) / 2)
    assert not client.search_model_versions(f"name='{name}'")  # seeds measure; they register nothing
    # `emo report`: one config, two runs, mean ± std
    report.main(["--experiment", name, "--output_dir", str(tmp_path / "reports")])
    printed = capsys.readouterr().out
    accuracy = [c.data.metrics["test/acc"] for c in children]
    mean, std = sum(accuracy) / 2, abs(accuracy[0] - accuracy[1]) / 2**0.5
    assert f"{mean:.4f} ± {std:.4f}" in printed
    # `emo report --compare`: the group (its two runs' mean) against its first run
    report.main(["--compare", parent.info.run_id, children[0].info.run_id])
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("test/acc"))
    a, b, difference = (float(v) for v in row.split()[1:4])
    assert (a, b) == pytest.approx((mean, accuracy[0]), abs=1e-4) and difference == pytest.approx(a - b, abs=2e-4)
    assert "(2 runs)" in printed and "95 % interval" in printed
    # on validation: each run's predictions at its kept checkpoint (one epoch here)
    report.main(["--compare", parent.info.run_id, children[0].info.run_id, "--compare_split", "val"])
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("val/acc"))
    a, b = (float(v) for v in row.split()[1:3])
    val_accuracy = [c.data.metrics["val/acc"] for c in children]
    assert (a, b) == pytest.approx((sum(val_accuracy) / 2, val_accuracy[0]), abs=1e-4)
    assert "validation" not in printed and "val examples" in printed


def test_a_sweep_that_minimizes_prunes_a_destructive_rate_and_marks_reports_and_registers_its_lowest_loss(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    name = "pruning-test"
    storage = f"sqlite:///{tmp_path}/optuna.db"
    learning_rates = [1e-3, 3e-3, 50.0]  # a grid runs in the listed order: the median exists for the last
    # Ranked by validation loss, which a tiny random model moves from the first epoch on; the direction is the metric's.
    sweep.main(sweep_args(tmp_path, tiny_model_dir, small_data_dir, name, learning_rates, "--trainer.max_epochs", "3",
                          "--sweep.metric", "val/loss", "--registry.champion_metric", "val/loss",
                          "--checkpoint.monitor", "val/loss", "--checkpoint.mode", "min"))  # fmt: skip

    trials = {t.params["optimizer.init_args.lr"]: t for t in optuna.load_study(study_name=name, storage=storage).trials}
    assert trials[50.0].state == TrialState.PRUNED
    assert len(trials[50.0].intermediate_values) == 1  # stopped after its first epoch
    assert trials[1e-3].state == trials[3e-3].state == TrialState.COMPLETE
    client = mlflow.MlflowClient()
    pruned_run = client.get_run(trials[50.0].user_attrs["mlflow_run_id"])
    assert pruned_run.data.tags["optuna.trial.state"] == "PRUNED" and pruned_run.info.status == "KILLED"
    assert "test/f1_weighted" not in pruned_run.data.metrics
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == 1 and versions[0].run_id != pruned_run.info.run_id
    # The best run is the one of lowest validation loss at its kept checkpoint: marked, first in the report, registered.
    kept_loss = {t.user_attrs["mlflow_run_id"]: min(m.value for m in client.get_metric_history(
        t.user_attrs["mlflow_run_id"], "val/loss")) for t in trials.values() if t.state == TrialState.COMPLETE}  # fmt: skip
    lowest = min(kept_loss, key=kept_loss.get)
    assert len(set(kept_loss.values())) == 2  # two trials told apart
    parent = the_parent(client, name)
    assert parent.data.tags["emo.best_run_id"] == lowest == versions[0].run_id
    report_text = (tmp_path / "reports" / name / "report.md").read_text()
    rows = [line for line in report_text.splitlines() if line.startswith(f"| {name}-trial-")]
    assert len(rows) == 3 and lowest in rows[0] and f"(run `{lowest}`)" in report_text
    assert f"best run by val/loss: {lowest}" in capsys.readouterr().out


def start_sweep(args: list[str], log: Path):
    return start_emo(["sweep", *args], log)


def test_two_processes_share_one_study(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    name = "two-workers-test"
    learning_rates = [1e-3, 2e-3, 3e-3, 5e-3]
    gate = tmp_path / "gate"
    # Each process holds its first trial until both have one running: both surely take part.
    args = sweep_args(
        tmp_path, tiny_model_dir, small_data_dir, name, learning_rates, "--sweep.pruner", "null", *gate_callback(gate)
    )
    first = start_sweep(args, tmp_path / "first.log")
    second = start_sweep(args, tmp_path / "second.log")
    wait_for_reached(gate, processes=2, watch=(first, second))
    open_gate(gate)
    for process, log in ((first, "first.log"), (second, "second.log")):
        assert process.wait(timeout=600) == 0, (tmp_path / log).read_text()[-3000:]

    client = mlflow.MlflowClient()
    parent = the_parent(client, name)
    children = children_of(client, parent.info.run_id)
    assert sorted(float(c.data.params["optimizer.init_args.lr"]) for c in children) == learning_rates  # each once
    assert len({c.data.tags["emo.worker"] for c in children}) == 2  # both processes ran trials
    assert len(client.search_model_versions(f"name='{name}'")) == 1


def test_an_interrupted_sweep_continues(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    name = "resume-test"
    storage = f"sqlite:///{tmp_path}/optuna.db"
    learning_rates = [1e-3, 3e-3, 1e-2]
    gate = tmp_path / "gate"
    # The second trial waits at its second step for the Ctrl-C; the rerun passes the gate.
    args = sweep_args(
        tmp_path,
        tiny_model_dir,
        small_data_dir,
        name,
        learning_rates,
        "--sweep.pruner",
        "null",
        *gate_callback(gate, at_step=2, run_suffix="trial-1", once_per_folder=True),
    )
    process = start_sweep(args, tmp_path / "interrupted.log")
    wait_for_reached(gate, processes=1, watch=(process,))
    process.send_signal(signal.SIGINT)  # Ctrl-C during the second trial
    assert process.wait(timeout=120) == 1
    assert "run the same command again to continue" in (tmp_path / "interrupted.log").read_text()
    client = mlflow.MlflowClient()
    parent_id = optuna.load_study(study_name=name, storage=storage).user_attrs["mlflow_parent_run_id"]
    assert client.get_run(parent_id).info.status == "KILLED"

    rerun = start_sweep(args, tmp_path / "rerun.log")
    assert rerun.wait(timeout=600) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    assert the_parent(client, name).info.run_id == parent_id  # the same parent run
    trials = optuna.load_study(study_name=name, storage=storage).trials
    done = sorted(t.params["optimizer.init_args.lr"] for t in trials if t.state == TrialState.COMPLETE)
    assert done == learning_rates
    # The interrupted trial's copy continued its MLflow run from the last checkpoint: three runs, all finished.
    children = children_of(client, parent_id)
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}
    interrupted = next(t for t in trials if t.state == TrialState.FAIL)
    retried = next(t for t in trials if t.system_attrs.get("failed_trial") == interrupted.number)
    assert retried.user_attrs["mlflow_run_id"] == interrupted.user_attrs["mlflow_run_id"]
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert len(client.search_model_versions(f"name='{name}'")) == 1


def test_a_killed_worker_s_trial_runs_again_once_its_heartbeat_is_stale(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    name = "killed-worker-test"
    storage = f"sqlite:///{tmp_path}/optuna.db"
    learning_rates = [1e-3, 3e-3]
    gate = tmp_path / "gate"
    args = sweep_args(tmp_path, tiny_model_dir, small_data_dir, name, learning_rates, "--sweep.pruner", "null",
                      "--sweep.trial_heartbeat_s", "2", "--sweep.trial_grace_s", "20",  # margins for 2 busy cores
                      "--last_checkpoint.every_n_train_steps", "2", "--trainer.log_every_n_steps", "1",
                      *gate_callback(gate, at_step=5, run_suffix="trial-0", once_per_folder=True))  # fmt: skip
    killed = start_sweep(args, tmp_path / "killed.log")
    wait_for_reached(gate, processes=1, watch=(killed,))
    other = start_sweep(args, tmp_path / "other.log")  # another worker on the same study, while trial 0 runs
    # It runs trial 1, then has nothing to take while the first worker runs trial 0: it waits for it, not leaves.
    deadline = time.monotonic() + 600
    while not [t for t in optuna.load_study(study_name=name, storage=storage).trials if t.state == TrialState.COMPLETE]:
        assert other.poll() is None, (tmp_path / "other.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "trial 1 did not complete within 600 s"
        time.sleep(0.5)
    killed.kill()  # the worker dies in the middle of its trial: nobody marks the trial as stopped
    killed.wait(timeout=60)
    # The waiting worker sees trial 0's heartbeat go stale (that is how the study learns its worker died) and runs it.
    assert other.wait(timeout=600) == 0, (tmp_path / "other.log").read_text()[-3000:]

    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.state for t in trials].count(TrialState.FAIL) == 1 and [t.state for t in trials].count(
        TrialState.COMPLETE
    ) == 2
    dead = next(t for t in trials if t.state == TrialState.FAIL)
    rerun = next(t for t in trials if t.system_attrs.get("failed_trial") == dead.number)
    assert rerun.state == TrialState.COMPLETE and rerun.params == dead.params
    assert rerun.user_attrs["mlflow_run_id"] == dead.user_attrs["mlflow_run_id"]  # it continued the dead trial's run
    client = mlflow.MlflowClient()
    parent = the_parent(client, name)
    children = children_of(client, parent.info.run_id)
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"} and parent.info.status == "FINISHED"
    steps_per_run = 2 * -(-300 // 16)
    for child in children:  # the continued run has every step once, as the other
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "train/loss")) == list(
            range(steps_per_run)
        )
    assert len(client.search_model_versions(f"name='{name}'")) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sweep.params", '{"model.lr": [1, 2]}'], "no option named model.lr"),
        (["--sweep.metric", "val/acc"], "must be the checkpoint monitor"),
        (["--trainer.devices", "2", "--trainer.strategy", "ddp"], "one device"),
    ],
)
def test_bad_sweeps_stop_at_parse_time(tmp_path, tiny_model_dir, small_data_dir, extra, message, capsys):
    with pytest.raises(SystemExit):
        sweep.main(sweep_args(tmp_path, tiny_model_dir, small_data_dir, "bad", [1e-3], *extra))
    assert message in capsys.readouterr().err


SWEEP_FILES = SHIPPED_SWEEP_CONFIGS


def test_sweep_configs_are_shipped():
    assert {"sweep.yaml", "sweep_tpe.yaml", "seeds.yaml"} <= {p.name for p in SWEEP_FILES}


@pytest.mark.parametrize("config", SWEEP_FILES, ids=lambda p: p.name)
def test_every_sweep_config_parses_with_and_without_offline(config, hub_offline):
    online = sweep.SweepCLI(["--config", str(config)])
    assert online.config.model.model_name_or_path == "distilbert-base-uncased"  # from base.yaml
    assert online.settings.params and online.settings.n_trials >= 1
    offline_yaml = [
        "--config",
        str(ROOT / "configs/offline.yaml"),
        "--data.data_dir",
        str(DATA_DIR),
    ]  # data/ is filled by `make data`
    offline = sweep.SweepCLI(["--config", str(config), *offline_yaml])
    assert offline.config.model.model_name_or_path == "models/all-MiniLM-L6-v2"


def test_default_sweep_is_the_original_grid_and_tpe_is_one_config_away(hub_offline):
    grid = sweep.SweepCLI(["--config", str(ROOT / "configs/sweep.yaml")]).settings
    assert grid.params == {"optimizer.init_args.lr": [1e-5, 2e-5, 5e-5]}
    assert grid.n_trials == 3 and grid.grid == [{"optimizer.init_args.lr": lr} for lr in (1e-5, 2e-5, 5e-5)]
    tpe = sweep.SweepCLI(["--config", str(ROOT / "configs/sweep_tpe.yaml")]).settings
    assert isinstance(tpe.sampler, optuna.samplers.TPESampler) and tpe.n_trials == 20 and not tpe.grid
    assert set(tpe.params) == {
        "optimizer.init_args.lr",
        "data.batch_size",
        "optimizer.init_args.weight_decay",
        "lr_scheduler.init_args.warmup_ratio",
        "trainer.max_epochs",
    }


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return ["joy"] * len(model_input)


def race(workers: int, action) -> list:
    """Runs `action(i)` in `workers` threads released at the same instant; returns the results in order."""
    barrier = threading.Barrier(workers)
    results = [None] * workers
    errors = []

    def work(i):
        try:
            barrier.wait()
            results[i] = action(i)
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def test_collisions_cannot_duplicate_parent_trials_or_versions(tmp_path, tracking_uri, monkeypatch):
    """Workers on one study meet at the three critical points at once: starting, taking trials, finishing."""
    name, workers = "collision-test", 4
    settings = sweep.SweepSettings(
        study_name=name,
        storage=f"sqlite:///{tmp_path}/optuna.db",
        params={"optimizer.init_args.lr": [1e-3, 2e-3, 3e-3]},
        report=False,
    )
    template = {
        "trainer": {"logger": {"init_args": {"experiment_name": name}}, "default_root_dir": str(tmp_path)},
        "registry": {
            "registered_model_name": name,
            "champion_alias": "champion",
            "champion_metric": "val/f1_weighted",
        },
    }
    # Worst case at start: every worker looks for the parent run before any has claimed one.
    looked = threading.local()
    real_value = sweep.Claims.value

    def value_before_anyone_claimed(self, what):
        if what == "parent-run" and not getattr(looked, "parent", False):
            looked.parent = True
            return None
        return real_value(self, what)

    monkeypatch.setattr(sweep.Claims, "value", value_before_anyone_claimed)
    sweeps = race(workers, lambda i: sweep.Sweep(settings, template))
    client = mlflow.MlflowClient()
    parent = the_parent(client, name)  # one active parent run
    assert {s.parent_run_id for s in sweeps} == {parent.info.run_id}
    experiment_id = parent.info.experiment_id
    deleted = client.search_runs([experiment_id], run_view_type=mlflow.entities.ViewType.DELETED_ONLY)
    assert len(deleted) == workers - 1  # the candidates of the workers that lost

    # Three grid points, four workers asking at once, twice: each point is taken exactly once.
    with mlflow.start_run(experiment_id=experiment_id) as model_run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant())
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
        mlflow.log_metric("val/f1_weighted", 0.5)
    taken = [
        trial
        for trials in (race(workers, lambda i: sweeps[i].queue.next_trial()) for _ in range(2))
        for trial in trials
        if trial
    ]
    learning_rates = [
        sweep.suggest(t, "optimizer.init_args.lr", settings.params["optimizer.init_args.lr"]) for t in taken
    ]
    assert sorted(learning_rates) == [1e-3, 2e-3, 3e-3]
    for trial, learning_rate in zip(taken, learning_rates, strict=True):
        trial.set_user_attr(sweep.RUN_ATTR, model_run.info.run_id)
        sweeps[0].study.tell(trial, learning_rate)
    assert len(sweeps[0].study.trials) == 3 and all(s.queue.complete() for s in sweeps)

    # All finish at the same instant: one registered version.
    race(workers, lambda i: sweeps[i].parent.finish())
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == ["1"]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_workers_tagging_a_new_experiment_at_once(tracking_uri):
    """Sweep workers start together: each tags the experiment as model training, and none may fail for it."""
    client = mlflow.MlflowClient()
    for round_ in range(5):
        experiment_id = client.create_experiment(f"tagged-at-once-{round_}")
        race(4, lambda i, experiment_id=experiment_id: mark_as_model_training(mlflow.MlflowClient(), experiment_id))
        assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def synthetic_study(n_trials: int, settings: tuple[str, ...] = ("lr", "batch"), pruned: int = 0) -> optuna.Study:
    """A study whose score depends on lr only: lr near 1e-3 is best; batch, when swept, is noise."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for number in range(n_trials + pruned):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        if "batch" in settings:
            trial.suggest_categorical("batch", [8, 16, 32])
        if number >= n_trials:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, 0.9 - abs(math.log10(lr) + 3) / 10 + 0.001 * (number % 2))
    return study


def test_importances_of_a_small_sweep_rank_the_setting_that_decides_the_score(tmp_path):
    record = write_sweep_analysis(synthetic_study(20), tmp_path, "val/f1_weighted")
    assert list(record["importances"]) == ["lr", "batch"] and record["importances"]["lr"] > 0.8
    assert sum(record["importances"].values()) == pytest.approx(1)
    assert record["finished_trials"] == 20 and record["direction"] == "maximize"
    assert json.loads((tmp_path / "param_importances.json").read_text()) == record
    table = (tmp_path / "param_importances.md").read_text()
    assert f"| lr | {record['importances']['lr']:.3f} |" in table and "| batch |" in table
    for picture in ("param_importances.png", "parallel_coordinate.png", "optimization_history.png"):
        assert (tmp_path / picture).read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "study, why",
    [
        (lambda: synthetic_study(5, settings=("lr",)), "one swept setting (lr): importances rank two or more"),
        (lambda: synthetic_study(2, pruned=3), "2 finished trials: importances need at least 3"),
    ],
    ids=["one setting", "two finished trials"],
)
def test_a_sweep_without_importances_says_why_in_one_line(tmp_path, study, why):
    record = write_sweep_analysis(study(), tmp_path, "val/f1_weighted")
    assert "importances" not in record and record["reason"].startswith(why)
    assert (tmp_path / "param_importances.md").read_text().strip().splitlines() == [
        f"No parameter importances: {record['reason']}."
    ]
    assert importances_lines(record) == [f"parameter importances: none: {record['reason']}"]
    assert not (tmp_path / "param_importances.png").exists()
    assert (tmp_path / "optimization_history.png").read_bytes().startswith(b"\x89PNG")  # the trials there are, still


def test_a_sweep_s_parent_logs_what_it_learnt_and_report_shows_it(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    name = "importances-test"
    args = shrunk_args(tmp_path, tiny_model_dir, small_data_dir,
                       "--trainer.logger.init_args.experiment_name", name, "--registry.registered_model_name", name,
                       "--sweep.study_name", name, "--sweep.storage", f"sqlite:///{tmp_path}/optuna.db", "--sweep.pruner", "null",
                       "--sweep.params", json.dumps({"data.eval_batch_size": [50, 25], "optimizer.init_args.lr": [1e-3, 1e-2]}),
                       "--trainer.max_epochs", "8", "--data.batch_size", "8",  # steps enough to tell the rates apart
                       configs=SWEEP_CONFIGS)  # fmt: skip
    # The grid's third point trains as its first (the eval batch size changes nothing learnt). A continued sweep whose
    # best trial changes moves its parent's best.* tags (tags: MLflow's params never change).
    report_args = ["--experiment", name, "--sweep", name, "--output_dir", str(tmp_path / "reports")]
    # Two trials of the grid's four: too few for importances, which the parent run and the report say in one line.
    sweep.main([*args, "--sweep.n_trials", "2"])
    client = mlflow.MlflowClient()
    parent = the_parent(client, name)
    record = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "sweep/param_importances.json", str(tmp_path))).read_text()
    )
    assert record["reason"] == "2 finished trials: importances need at least 3"
    report.main(report_args)
    assert (
        "parameter importances: none: 2 finished trials: importances need at least 3"
        in capsys.readouterr().out.splitlines()
    )
    # The same sweep continued to a third trial: the parent run now holds the importances, and the report prints them.
    sweep.main([*args, "--sweep.n_trials", "3"])
    parent = client.get_run(parent.info.run_id)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {
        f"sweep/{f}"
        for f in (
            "param_importances.json",
            "param_importances.md",
            "param_importances.png",
            "parallel_coordinate.png",
            "optimization_history.png",
        )
    } <= logged
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    importances = {
        k.removeprefix("importance/"): v for k, v in parent.data.metrics.items() if k.startswith("importance/")
    }
    assert set(importances) == {"optimizer.init_args.lr", "data.eval_batch_size"} and sum(
        importances.values()
    ) == pytest.approx(1)
    assert importances == pytest.approx(
        get_param_importances(
            optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db"),
            evaluator=PedAnovaImportanceEvaluator(),
        )
    )
    report.main(report_args)
    printed = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(printed) if line.startswith("parameter importances of val/f1_weighted"))
    assert "PED-ANOVA, 3 finished trials" in printed[head]
    width = max(len(setting) for setting in importances)
    assert sorted(printed[head + 1 : head + 3]) == sorted(
        f"  {setting:<{width}}  {value:.3f}" for setting, value in importances.items()
    )
    text = (tmp_path / "reports" / name / "report.md").read_text()
    assert "## What the sweep learnt" in text and "](param_importances.png)" in text
    assert (tmp_path / "reports" / name / "param_importances.png").read_bytes().startswith(b"\x89PNG")


def test_a_trial_queued_by_one_process_takes_its_settings_in_another(tmp_path):
    """Process A queues a slot, process B takes that trial before its Optuna cache has seen it: B still runs it."""
    storage, space = f"sqlite:///{tmp_path}/optuna.db", [1e-3, 2e-3]
    grid = [{"optimizer.init_args.lr": value} for value in space]  # a grid point's values are fixed: no sampler reads
    a, b = (sweep.TrialQueue(storage, "queued-elsewhere", None, None, "maximize", 2, grid) for _ in range(2))
    assert a.queue_next_slot()
    trial = b.take_waiting_trial()
    assert trial is not None and trial.number == 0
    assert sweep.suggest(trial, "optimizer.init_args.lr", space) == space[0]
    b.study.tell(trial, 0.5)
    assert [t.state for t in a.study.get_trials()] == [TrialState.COMPLETE]
