"""The shape of the code as a researcher changes it: a metric is one line in the spec, commands that do not train
start without torch. (The layer contract itself is `lint-imports`, run by `make test`.)"""

import subprocess
import sys

import mlflow
import pytest

from emo import spec
from emo.cli import EmoCLI
from emo.report.runs import load_runs, summary_table
from emo.spec import Metric
from helpers.data import shrunk_args

TRAINING_LIBRARIES = ("torch", "lightning", "transformers", "datasets")


@pytest.mark.parametrize("args", [["--help"], ["report", "--help"], ["sync", "--help"], ["sync", "--root", "{tmp}"],
                                  ["report", "--experiment", "nothing-here"]], ids=" ".join)  # fmt: skip
def test_commands_that_do_not_train_load_no_training_library(args, tmp_path):
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    probe = ("import sys\nfrom emo.commands import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             f"print('loaded:', sorted(name for name in {TRAINING_LIBRARIES!r} if name in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "PATH": ""})  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "loaded: []", done.stdout


def test_adding_a_metric_is_one_line_in_the_spec(tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch):
    recall = Metric("recall_macro", "macro recall", "MulticlassRecall", (("average", "macro"),), headline=True)
    monkeypatch.setattr(spec, "METRICS", (*spec.METRICS, recall))
    name = "metric-in-one-place"
    cli = EmoCLI(args=["fit", *shrunk_args(tmp_path, tiny_model_dir, small_data_dir, "--trainer.max_epochs", "1",
                                           "--trainer.logger.init_args.experiment_name", name,
                                           "--registry.registered_model_name", name,
                                           "--checkpoint.monitor", "val/recall_macro")])  # fmt: skip
    client = mlflow.MlflowClient()
    run = client.get_run(cli.trainer.logger.run_id)
    assert client.get_metric_history(run.info.run_id, "val/recall_macro")  # computed by the model, logged
    assert 0 <= run.data.metrics["test/recall_macro"] <= 1
    assert run.data.params["checkpoint.monitor"] == "val/recall_macro"  # a choice of monitor
    assert "macro recall" in run.data.tags["mlflow.note.content"]  # the run's description
    version = client.search_model_versions(f"name='{name}'")[0]
    assert "macro recall" in version.description  # the registered version's
    runs = load_runs(client, name, None, "val/recall_macro", maximize=True)
    assert {"val/recall_macro", "test/recall_macro"} <= set(summary_table(runs, [], "val/recall_macro", True).columns)
