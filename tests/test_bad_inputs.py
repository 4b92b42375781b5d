"""Every bad input is one line: its documented exit status, the culprit named, no traceback, no run, no model version.

The one exception is a loss that becomes NaN: training itself failed, so exactly one run exists, FAILED, with the
reason in its tag `emo.failure`.
"""

import mlflow
import pytest

from emo.commands import main
from emo_lab.bad_inputs import CASES, Context


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line(case, tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch, capsys):
    ctx = Context(tmp_path, tiny_model_dir, small_data_dir, tracking_uri, name=f"bad-{case.name.replace(' ', '-')}")
    args, env = case.build(ctx)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == case.status
    errors = capsys.readouterr().err
    assert "Traceback" not in errors
    error_lines = [line for line in errors.splitlines() if "error" in line.lower() or "exception" in line.lower()]
    assert len(error_lines) == 1 and errors.strip().splitlines()[-1] == error_lines[0], errors[-2000:]
    assert error_lines[0].startswith("emo: error: ") and case.expected in error_lines[0], error_lines[0]

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(ctx.name)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    if case.runs_left:
        [run] = runs
        assert run.info.status == "FAILED" and run.data.tags["emo.failure"].startswith("TrainingDiverged: the training loss became nan")
    else:
        assert runs == []
    assert not client.search_model_versions(f"name='{ctx.name}'")
