"""Reading and writing runs directly (not through a journal): a sweep's parent run, reports, comparisons."""

from mlflow.entities import Param

from emo.params import param_value
from emo.spec import PARENT_RUN_TAG

PARAMS_PER_CALL = 100  # MLflow takes at most 100 params a batch


def log_params(client, run_id: str, params: dict) -> None:
    """Params sent directly (a sweep's parent run); a run's own params go through its journal."""
    entries = [Param(key, param_value(key, value)) for key, value in params.items()]
    for start in range(0, len(entries), PARAMS_PER_CALL):
        client.log_batch(run_id, params=entries[start : start + PARAMS_PER_CALL])


def children_filter(parent_run_id: str) -> str:
    """The search filter for the runs nested under a parent (a sweep's trials)."""
    return f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'"


def test_metrics(run) -> dict[str, float]:
    """The run's scores on the test split."""
    return {name: value for name, value in run.data.metrics.items() if name.startswith("test/")}


def best_step_metrics(client, run_id: str, metric: str, maximize: bool = True) -> dict[str, float]:
    """Validation metrics of the epoch where `metric` was best: the epoch the checkpoint kept."""
    history = client.get_metric_history(run_id, metric)
    if not history:
        return {}
    best = (max if maximize else min)(history, key=lambda m: m.value)
    values = {}
    for name in client.get_run(run_id).data.metrics:
        if name.startswith("val/"):
            values[name] = next((m.value for m in client.get_metric_history(run_id, name) if m.step == best.step), None)
    return values
