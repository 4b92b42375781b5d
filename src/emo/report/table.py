"""The runs of an experiment (or of one sweep) as a table: validation at each run's kept checkpoint, test scores,
the best run by a validation metric, and the mean ± std of runs that differ only in their seed."""

import pandas as pd

from emo.selection import best_index
from emo.spec import (
    SEED_SETTING,
    STAGE_TAG,
    SWEEP_TAG,
    TRIAL_STATE_TAG,
    defines_experiment,
    headline_metrics,
    is_maximized,
)
from emo.store import children_filter, kept_validation, test_metrics

KEY_PARAMS = [
    "model.model_name_or_path",
    "optimizer.class_path",
    "optimizer.init_args.lr",
    "data.batch_size",
    "optimizer.init_args.weight_decay",
    "lr_scheduler.init_args.warmup_ratio",
    "trainer.max_epochs",
    "data.train_size",
]


def load_runs(client, experiment_name: str, parent_run_id: str | None) -> pd.DataFrame:
    """The emo fits of an experiment (or the children of a parent run), oldest first: params, validation at the kept
    checkpoint (`best.val/...`), test scores, status and duration."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ValueError(f"no MLflow experiment named {experiment_name!r} at {client.tracking_uri}")
    query = children_filter(parent_run_id) if parent_run_id else ""
    # Oldest first: of runs with equal scores the first is best, as in Optuna.
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=query, max_results=5000, order_by=["attributes.start_time ASC"]
    )
    rows = []
    for run in runs:
        if SWEEP_TAG in run.data.tags or STAGE_TAG not in run.data.tags:
            continue  # sweep parents and runs that are not emo fits
        rows.append(
            {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "status": run.data.tags.get(TRIAL_STATE_TAG, run.info.status),
                "minutes": f"{((run.info.end_time or run.info.start_time) - run.info.start_time) / 60000:.1f}",
                **{f"params.{k}": v for k, v in run.data.params.items()},
                **{f"best.{k}": v for k, v in kept_validation(client, run).items()},  # at the kept checkpoint
                **test_metrics(run),
            }
        )
    return pd.DataFrame(rows)


def select_best(runs: pd.DataFrame, metric: str) -> pd.Series:
    """The best run by `metric` at the kept checkpoints, in its direction (`emo.selection.best_index`)."""
    if not metric.startswith("val/"):
        raise ValueError(f"select runs by a validation metric, not {metric!r}: test scores must stay unseen")
    column = f"best.{metric}"
    best = best_index(runs[column].tolist(), metric) if column in runs else None
    if best is None:
        raise ValueError(f"no run has {metric}")
    return runs.iloc[best]


def varying_params(runs: pd.DataFrame, swept: list[str]) -> list[str]:
    if swept:
        return [p for p in swept if f"params.{p}" in runs]
    return [p for p in KEY_PARAMS if f"params.{p}" in runs and runs[f"params.{p}"].nunique() > 1]


def config_columns(runs: pd.DataFrame) -> list[str]:
    """The params that tell one set of settings from another: those that vary, less the seed and bookkeeping."""
    columns = [c for c in runs if c.startswith("params.") and runs[c].nunique(dropna=False) > 1]
    return [c for c in columns if c != f"params.{SEED_SETTING}" and defines_experiment(c.removeprefix("params."))]


def seed_groups(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std per set of settings over its seeds, for runs with test scores; one row per config."""
    tested = runs.dropna(subset=["test/acc"]) if "test/acc" in runs else runs.iloc[0:0]
    if tested.empty:
        return pd.DataFrame()
    keys = config_columns(tested)
    groups = tested.groupby(keys, dropna=False, sort=False) if keys else [((), tested)]
    rows = []
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        config = ", ".join(f"{k.removeprefix('params.')}={v}" for k, v in zip(keys, values, strict=True)) or "all runs"
        row = {"config": config, "runs": len(group)}
        for metric in [*(f"best.{name}" for name in headline_metrics("val")), *headline_metrics("test")]:
            if metric in group:
                row[metric.removeprefix("best.")] = mean_std(group[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def mean_std(values: pd.Series) -> str:
    values = values.dropna().astype(float)
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value):
        if isinstance(value, float):
            return "–" if pd.isna(value) else f"{value:.4f}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summary_table(runs: pd.DataFrame, params: list[str], metric: str) -> pd.DataFrame:
    """The runs as the report shows them, the best first (`metric`'s direction; of equals, the oldest first)."""
    columns = {"run_name": "run", "status": "status", "minutes": "minutes"}
    columns |= {f"params.{p}": p for p in params}
    columns |= {f"best.{m}": m for m in headline_metrics("val")}
    columns |= {m: m for m in headline_metrics("test")}
    columns |= {f"best.{metric}": metric, "run_id": "run id"}
    present = [c for c in columns if c in runs]
    return runs[present].rename(columns=columns).sort_values(metric, ascending=not is_maximized(metric), kind="stable")
