"""The report's figures: the metric against each swept hyperparameter, and the learning curves side by side."""

from pathlib import Path

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # drawn into files: no pyplot, no backend, nothing to close

from emo.spec import TRAIN_LOSS  # noqa: E402


def as_number(values: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().all() else values


def plot_metric_vs_params(runs: pd.DataFrame, params: list[str], metric: str, path: Path) -> None:
    columns = max(len(params), 1)
    figure = Figure(figsize=(max(6.0, 4.5 * columns), 4.0))
    axes = figure.subplots(1, columns, squeeze=False)
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


def plot_learning_curves(client, runs: pd.DataFrame, metric: str, path: Path) -> None:
    figure = Figure(figsize=(11, 4))
    train_ax, val_ax = figure.subplots(1, 2)
    for _, run in runs.iterrows():
        label = run["run_name"]
        for ax, name in ((train_ax, TRAIN_LOSS), (val_ax, metric)):
            history = sorted(client.get_metric_history(run["run_id"], name), key=lambda m: m.step)
            ax.plot(
                [m.step for m in history], [m.value for m in history], marker="o" if ax is val_ax else None, label=label
            )
    train_ax.set(title=TRAIN_LOSS, xlabel="step")
    val_ax.set(title=metric, xlabel="step")
    for ax in (train_ax, val_ax):
        ax.grid(alpha=0.3)
    val_ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
