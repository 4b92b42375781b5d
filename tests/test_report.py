"""`emo report` on a prepared experiment in a real MLflow server."""

import re

import mlflow
import pytest

from emo import report
from emo.commands import main

# (validation weighted F1 per epoch, test weighted F1, learning rate)
PREPARED = {
    "peaks-early": ([0.50, 0.80, 0.70], 0.70, 1e-4),  # best checkpoint: 0.80
    "ends-high": ([0.60, 0.75, 0.78], 0.90, 3e-5),  # best last value and best test score, lower peak
    "weak": ([0.30, 0.40, 0.45], 0.40, 1e-5),
}


@pytest.fixture
def prepared_experiment(tracking_uri, request):
    name = f"report-{request.node.name}"
    experiment_id = mlflow.create_experiment(name)
    ids = {}
    for run_name, (val_f1, test_f1, lr) in PREPARED.items():
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.set_tag("emo.stage", "fit")
            mlflow.log_params({"optimizer.init_args.lr": lr, "data.batch_size": 16})
            for epoch, value in enumerate(val_f1):
                step = (epoch + 1) * 100
                mlflow.log_metrics({"val/f1_weighted": value, "val/acc": value + 0.01}, step=step)
                for s in range(step - 100, step, 20):
                    mlflow.log_metric("train/loss", 2.0 - value - s / 1000, step=s)
            mlflow.log_metrics({"test/f1_weighted": test_f1, "test/acc": test_f1})
        ids[run_name] = run.info.run_id
    return name, ids


def test_report_picks_the_best_checkpoint_by_validation(prepared_experiment, tmp_path, capsys):
    name, ids = prepared_experiment
    report.main(["--experiment", name, "--output_dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert f"best run by val/f1_weighted: {ids['peaks-early']}" in printed
    for run_name in PREPARED:
        assert run_name in printed
    folder = tmp_path / name
    text = (folder / "report.md").read_text()
    assert ids["peaks-early"] in text and "| peaks-early |" in text
    assert "0.8000" in text  # validation at the best epoch, not the last one (0.70)
    for plot in ("metric_vs_params.png", "learning_curves.png"):
        data = (folder / plot).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
        assert f"]({plot})" in text


def one_line(args: list[str], capsys) -> str:
    """`emo report ARGS` that stops with one line, exit status 1: the line."""
    with pytest.raises(SystemExit) as stopped:
        main(["report", *args])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 1
    return line


@pytest.mark.parametrize("metric", ["test/f1_weighted", "train/loss"])
def test_report_refuses_to_select_on_non_validation_metrics(prepared_experiment, tmp_path, metric, capsys):
    name, _ = prepared_experiment
    line = one_line(["--experiment", name, "--metric", metric, "--output_dir", str(tmp_path)], capsys)
    assert line.startswith(f"emo: error: --metric {metric}: select runs by a validation metric")


def test_report_on_a_missing_experiment_says_so(tracking_uri, tmp_path, capsys):
    line = one_line(["--experiment", "nope", "--output_dir", str(tmp_path)], capsys)
    assert line.startswith("emo: error: no MLflow experiment named 'nope'")


def test_compare_needs_logged_test_predictions(prepared_experiment, capsys):
    _, ids = prepared_experiment  # runs logged without predictions, as runs from before emo logged them
    line = one_line(["--compare", ids["peaks-early"], ids["weak"]], capsys)
    assert re.match(r"emo: error: --compare: run \w+ \(peaks-early\) has no test/predictions.csv", line)
    line = one_line(["--compare", "not-a-run", ids["weak"]], capsys)
    assert line.startswith("emo: error: --compare: no run 'not-a-run' at http://127.0.0.1:")
