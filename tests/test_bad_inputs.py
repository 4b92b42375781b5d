"""Every bad input is one line: exit status not 0, the culprit named, no traceback, no run left RUNNING, no version."""

import mlflow
import pytest

from emo.commands import main
from helpers.bad_inputs import CASES, Context


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line(case, tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch, capsys):
    ctx = Context(tmp_path, tiny_model_dir, small_data_dir, tracking_uri, name=f"bad-{case.name.replace(' ', '-')}")
    args, env = case.build(ctx)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code not in (0, None)
    errors = capsys.readouterr().err
    assert "Traceback" not in errors
    last_line = errors.strip().splitlines()[-1]
    assert last_line.startswith("emo: error: ") and case.expected in last_line, last_line

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(ctx.name)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    assert all(run.info.status == "FAILED" for run in runs)  # a run exists only when training itself failed
    assert not client.search_model_versions(f"name='{ctx.name}'")
