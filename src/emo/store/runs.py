"""Reading and writing runs directly (not through a journal): a sweep's parent run, reports, comparisons; what a run
kept (its validation at the kept checkpoint) and the predictions it logged."""

import tempfile

import pandas as pd
from mlflow.entities import Param

from emo import first_line
from emo.params import param_value
from emo.selection import best_index
from emo.spec import KEPT_STEP_TAG, PARENT_RUN_TAG, predictions_artifact

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


def kept_step(client, run) -> int | None:
    """The training step of the checkpoint a fit kept (tag `emo.kept_step`); for a run without the tag, the first step
    where its checkpoint monitor was best, as Lightning's `ModelCheckpoint` keeps it. None before any validation."""
    if KEPT_STEP_TAG in run.data.tags:
        return int(run.data.tags[KEPT_STEP_TAG])
    monitor = run.data.params.get("checkpoint.monitor", "val/f1_weighted")
    history = sorted(client.get_metric_history(run.info.run_id, monitor), key=lambda m: m.step)
    index = best_index([m.value for m in history], monitor)
    return None if index is None else history[index].step


def kept_validation(client, run) -> dict[str, float]:
    """The run's validation metrics at the checkpoint it kept (`kept_step`): what it is chosen and crowned by."""
    step = kept_step(client, run)
    if step is None:
        return {}
    values = {}
    for name in run.data.metrics:
        if name.startswith("val/"):
            at_step = [m.value for m in client.get_metric_history(run.info.run_id, name) if m.step == step]
            if at_step:
                values[name] = at_step[-1]
    return values


def logged_predictions(client, run, split: str) -> pd.DataFrame:
    """The predictions a run logged on a split (`test/predictions.csv`, `val/predictions.csv`: the kept checkpoint's);
    ValueError naming the run when it logged none."""
    artifact = predictions_artifact(split)
    with tempfile.TemporaryDirectory() as folder:
        try:
            return pd.read_csv(client.download_artifacts(run.info.run_id, artifact, folder), keep_default_na=False)
        except Exception as error:  # a run from before predictions were logged, or one that never tested
            raise ValueError(
                f"run {run.info.run_id} ({run.info.run_name}) has no {artifact}: {first_line(error)}"
            ) from None
