"""`python -m emo report`: compare the runs of an experiment (or of one sweep) and pick the best.

    python -m emo report [--experiment NAME] [--sweep STUDY | --parent_run_id ID] [--metric val/f1_weighted]
    python -m emo report --compare RUN_A RUN_B       (runs, or sweep parents: their trials as a group)
    python -m emo report --compare RUN_A RUN_B --compare_split val   (on validation: the one to choose by)

Prints a table of the runs, the mean ± std of the runs that differ only in their seed, selects
the best by a validation metric (never a train or test one) and writes `reports/<name>/report.md`
with plots: the metric against each swept hyperparameter, the learning curves side by side, and
the best run's confusion matrix. Logged to the sweep's parent run when there is one.
`--compare` tells whether A beats B: the differences in accuracy and macro F1 with a paired
bootstrap 95 % interval, from the predictions both logged (`emo.analysis`): on test by default,
on validation with `--compare_split val`.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from jsonargparse import auto_cli  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # noqa: E402

from emo.analysis import paired_bootstrap, predictions_artifact  # noqa: E402
from emo.data import LABELS  # noqa: E402
from emo.tracking import DEFAULT_EXPERIMENT, resolve_tracking_uri  # noqa: E402

HEADLINE_METRICS = ["val/acc", "val/f1_weighted", "val/f1_macro", "test/acc", "test/f1_weighted", "test/f1_macro"]
SEED_PARAM = "seed_everything"
# Params that differ between runs of the same settings: where a run is written, its name, its tags.
BOOKKEEPING = ("trainer.logger", "trainer.default_root_dir", "ckpt_path", "checkpoint.dirpath", "prediction.")
KEY_PARAMS = ["model.model_name_or_path", "model.learning_rate", "data.batch_size", "model.weight_decay",
              "model.warmup_ratio", "trainer.max_epochs", "data.train_size"]  # fmt: skip


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


def load_runs(client, experiment_name: str, parent_run_id: str | None, metric: str, maximize: bool) -> pd.DataFrame:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ValueError(f"no MLflow experiment named {experiment_name!r} at {client.tracking_uri}")
    query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'" if parent_run_id else ""
    # Oldest first: of runs with equal scores the first is best, as in Optuna.
    runs = client.search_runs([experiment.experiment_id], filter_string=query, max_results=5000, order_by=["attributes.start_time ASC"])
    rows = []
    for run in runs:
        if "emo.sweep" in run.data.tags or "emo.stage" not in run.data.tags:
            continue  # sweep parents and runs that are not emo fits
        at_best = best_step_metrics(client, run.info.run_id, metric, maximize)
        rows.append(
            {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "status": run.data.tags.get("optuna.trial.state", run.info.status),
                "minutes": f"{((run.info.end_time or run.info.start_time) - run.info.start_time) / 60000:.1f}",
                **{f"params.{k}": v for k, v in run.data.params.items()},
                **{f"best.{k}": v for k, v in at_best.items()},  # validation at the kept checkpoint
                **{k: v for k, v in run.data.metrics.items() if k.startswith("test/")},
            }
        )
    return pd.DataFrame(rows)


def select_best(runs: pd.DataFrame, metric: str, maximize: bool = True) -> pd.Series:
    if not metric.startswith("val/"):
        raise ValueError(f"select runs by a validation metric, not {metric!r}: test scores must stay unseen")
    column = f"best.{metric}"
    if runs.empty or column not in runs or runs[column].isna().all():
        raise ValueError(f"no run has {metric}")
    candidates = runs.dropna(subset=[column])
    return candidates.loc[candidates[column].idxmax() if maximize else candidates[column].idxmin()]


def varying_params(runs: pd.DataFrame, swept: list[str]) -> list[str]:
    if swept:
        return [p for p in swept if f"params.{p}" in runs]
    return [p for p in KEY_PARAMS if f"params.{p}" in runs and runs[f"params.{p}"].nunique() > 1]


def as_number(values: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().all() else values


def plot_metric_vs_params(runs: pd.DataFrame, params: list[str], metric: str, path: Path) -> None:
    columns = max(len(params), 1)
    figure, axes = plt.subplots(1, columns, figsize=(max(6.0, 4.5 * columns), 4.0), squeeze=False)
    for ax, param in zip(axes[0], params, strict=False):
        x = as_number(runs[f"params.{param}"])
        ax.scatter(x, runs[f"best.{metric}"], c=["tab:red" if s == "PRUNED" else "tab:blue" for s in runs["status"]])
        if pd.api.types.is_numeric_dtype(x) and x.min() > 0 and x.max() / x.min() >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(f"{metric} (best epoch)")
        ax.grid(alpha=0.3)
    figure.suptitle(f"{metric} per swept hyperparameter (red: pruned)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_learning_curves(client, runs: pd.DataFrame, metric: str, path: Path) -> None:
    figure, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for _, run in runs.iterrows():
        label = run["run_name"]
        for ax, name in ((train_ax, "train/loss"), (val_ax, metric)):
            history = sorted(client.get_metric_history(run["run_id"], name), key=lambda m: m.step)
            ax.plot([m.step for m in history], [m.value for m in history], marker="o" if ax is val_ax else None, label=label)
    train_ax.set(title="train/loss", xlabel="step")
    val_ax.set(title=metric, xlabel="step")
    for ax in (train_ax, val_ax):
        ax.grid(alpha=0.3)
    val_ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def config_columns(runs: pd.DataFrame) -> list[str]:
    """The params that tell one set of settings from another: those that vary, less the seed and bookkeeping."""
    columns = [c for c in runs if c.startswith("params.") and runs[c].nunique(dropna=False) > 1]
    return [c for c in columns if c != f"params.{SEED_PARAM}" and not c.removeprefix("params.").startswith(BOOKKEEPING)]


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
        for metric in ("best.val/acc", "best.val/f1_macro", "test/acc", "test/f1_weighted", "test/f1_macro"):
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


def summary_table(runs: pd.DataFrame, params: list[str], metric: str, maximize: bool) -> pd.DataFrame:
    columns = {"run_name": "run", "status": "status", "minutes": "minutes"}
    columns |= {f"params.{p}": p for p in params}
    columns |= {f"best.{m}": m for m in HEADLINE_METRICS if m.startswith("val/")}
    columns |= {m: m for m in HEADLINE_METRICS if m.startswith("test/")}
    columns |= {f"best.{metric}": metric, "run_id": "run id"}
    present = [c for c in columns if c in runs]
    return runs[present].rename(columns=columns).sort_values(metric, ascending=not maximize)


def write_report(
    experiment_name: str = DEFAULT_EXPERIMENT,
    parent_run_id: str | None = None,
    metric: str = "val/f1_weighted",
    direction: Literal["maximize", "minimize"] = "maximize",
    output_dir: str = "reports",
    client=None,
) -> Path:
    client = client or mlflow.MlflowClient(resolve_tracking_uri())
    maximize = direction == "maximize"
    runs = load_runs(client, experiment_name, parent_run_id, metric, maximize)
    best = select_best(runs, metric, maximize)
    swept = []
    name = experiment_name
    if parent_run_id:
        parent = client.get_run(parent_run_id)
        swept = [k.removeprefix("sweep.params.") for k in parent.data.params if k.startswith("sweep.params.")]
        name = parent.info.run_name
    params = varying_params(runs, swept)
    folder = Path(output_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    plot_metric_vs_params(runs, params, metric, folder / "metric_vs_params.png")
    plot_learning_curves(client, runs, metric, folder / "learning_curves.png")
    confusion = None
    try:
        confusion = client.download_artifacts(best["run_id"], "test/confusion_matrix.png", str(folder))
        shutil.move(confusion, folder / "best_confusion_matrix.png")
        shutil.rmtree(folder / "test", ignore_errors=True)
    except Exception:  # a run without a test (pruned, interrupted) has none
        confusion = None
    table = summary_table(runs, params, metric, maximize)
    text = [
        f"# {name}: {len(runs)} runs in experiment `{experiment_name}`\n",
        f"Best by `{metric}` (validation, at the kept checkpoint): **{best['run_name']}** (run `{best['run_id']}`), "
        f"{metric} = {best[f'best.{metric}']:.4f}" + (f", test/f1_weighted = {best['test/f1_weighted']:.4f}" if "test/f1_weighted" in best and pd.notna(best["test/f1_weighted"]) else "") + ".\n",
        "Validation columns are at each run's best epoch; test columns are that checkpoint on the test split.\n",
        markdown_table(table),
        f"\n## {metric} against the hyperparameters\n\n![](metric_vs_params.png)\n",
        "\n## Learning curves\n\n![](learning_curves.png)\n",
    ]
    if confusion:
        text.append("\n## Confusion matrix of the best run (test split)\n\n![](best_confusion_matrix.png)\n")
    groups = seed_groups(runs)
    if not groups.empty and (groups["runs"] > 1).any():
        text.insert(4, "\n## Mean ± std over seeds, per config\n\n" + markdown_table(groups))
    (folder / "report.md").write_text("\n".join(text))
    print(table.to_string(index=False))
    if not groups.empty and (groups["runs"] > 1).any():
        print("\nmean ± std (sample std) over the runs of each config:")
        print(groups.to_string(index=False))
    print(f"\nbest run by {metric}: {best['run_id']} ({best['run_name']})")
    print(f"report: {folder / 'report.md'}")
    if parent_run_id:
        client.log_artifacts(parent_run_id, str(folder), "report")
    return folder / "report.md"


def group_predictions(client, run_id: str, split: str = "test") -> tuple[str, list[pd.DataFrame]]:
    """A run's predictions on a split, or those of every finished trial of a sweep parent; with a name to print."""
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ValueError(f"no run {run_id!r} at {client.tracking_uri}") from None
    children = client.search_runs([run.info.experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}'",
                                  max_results=5000)  # fmt: skip
    members = [child for child in children if child.info.status == "FINISHED"] if children else [run]
    frames, artifact = [], predictions_artifact(split)
    with tempfile.TemporaryDirectory() as folder:
        for member in members:
            try:
                frames.append(pd.read_csv(client.download_artifacts(member.info.run_id, artifact, folder)))
            except Exception as error:  # a run from before predictions were logged, or one that never tested
                raise ValueError(f"run {member.info.run_id} ({member.info.run_name}) has no {artifact}: {error}") from None
    name = f"{run.info.run_name} ({len(frames)} runs)" if children else run.info.run_name
    return name, frames


def compare_runs(client, run_a: str, run_b: str, split: str = "test", draws: int = 10_000) -> dict:
    """Prints A - B in accuracy and macro F1 on a split with a paired bootstrap 95 % interval."""
    name_a, group_a = group_predictions(client, run_a, split)
    name_b, group_b = group_predictions(client, run_b, split)
    result = paired_bootstrap(group_a, group_b, LABELS, draws=draws)
    print(f"A: {name_a} [{run_a}]\nB: {name_b} [{run_b}]")
    print(f"paired bootstrap over the {len(group_a[0])} {split} examples, {draws} draws\n")
    print(f"{'metric':<14}{'A':>8}{'B':>8}{'A - B':>9}   95 % interval        P(B better)")
    for metric, r in result.items():
        print(f"{split + '/' + metric:<14}{r['a']:>8.4f}{r['b']:>8.4f}{r['difference']:>+9.4f}   "
              f"[{r['low']:+.4f}, {r['high']:+.4f}]   {r['p_b_better']:.3f}")  # fmt: skip
    return result


def report(
    experiment: str = DEFAULT_EXPERIMENT,
    sweep: str | None = None,
    parent_run_id: str | None = None,
    metric: str = "val/f1_weighted",
    direction: Literal["maximize", "minimize"] = "maximize",
    output_dir: str = "reports",
    compare: tuple[str, str] | None = None,
    compare_split: Literal["val", "test"] = "test",
) -> None:
    """Compare runs and pick the best by a validation metric.

    Args:
        experiment: MLflow experiment to read.
        sweep: Only the trials of this sweep (its study name).
        parent_run_id: Only the children of this run.
        metric: Validation metric that selects the best run.
        direction: Whether larger or smaller is better.
        output_dir: Where the report folder goes.
        compare: Two run ids (or sweep parent run ids, for groups of seeds): is A better than B?
        compare_split: The split to compare on: `val` (the kept checkpoints' validation) to choose, `test` to report.
    """
    client = mlflow.MlflowClient(resolve_tracking_uri())
    if compare:
        try:
            compare_runs(client, *compare, split=compare_split)
        except (ValueError, mlflow.exceptions.MlflowException) as error:
            raise SystemExit(f"emo: error: --compare: {str(error).splitlines()[0]}") from None
        return
    if sweep and not parent_run_id:
        found = client.get_experiment_by_name(experiment)
        parents = found and client.search_runs([found.experiment_id], filter_string=f"tags.`emo.sweep` = '{sweep}'")
        if not parents:
            raise SystemExit(f"emo: error: no sweep named {sweep!r} in experiment {experiment!r}")
        parent_run_id = parents[0].info.run_id
    try:
        write_report(experiment, parent_run_id, metric, direction, output_dir, client)
    except ValueError as error:
        raise SystemExit(f"emo: error: {error}") from None


def pair_compare_values(args: list[str]) -> list[str]:
    """`--compare A B`, as people type it, into the `--compare [A,B]` the parser reads."""
    if "--compare" in args:
        at = args.index("--compare")
        values = args[at + 1 : at + 3]
        if len(values) == 2 and not any(value.startswith("-") or value.startswith("[") for value in values):
            return [*args[: at + 1], f"[{values[0]},{values[1]}]", *args[at + 3 :]]
    return args


def main(args=None) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per downloaded file buries the table
    auto_cli(report, args=pair_compare_values(list(sys.argv[1:] if args is None else args)))
