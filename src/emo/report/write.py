"""`reports/<name>/report.md`: the runs' table, the best run, mean ± std over seeds, and the figures; printed too,
and logged to the sweep's parent run when there is one."""

import shutil
from pathlib import Path

import mlflow
import pandas as pd

from emo.report.importance import importances_lines, logged_sweep_analysis, sweep_analysis_markdown
from emo.report.plots import plot_learning_curves, plot_metric_vs_params
from emo.report.table import load_runs, markdown_table, seed_groups, select_best, summary_table, varying_params
from emo.spec import CONFUSION_ARTIFACT, DEFAULT_EXPERIMENT, REPORT_ARTIFACTS, SWEEP_TAG
from emo.store import resolve_tracking_uri


def write_report(
    experiment_name: str = DEFAULT_EXPERIMENT,
    parent_run_id: str | None = None,
    metric: str = "val/f1_weighted",
    output_dir: str = "reports",
    client=None,
) -> Path:
    """The report of an experiment's runs (or a parent's children): figures and report.md in `output_dir/<name>`,
    the tables printed, and all of it logged to the parent run when there is one."""
    client = client or mlflow.MlflowClient(resolve_tracking_uri())
    runs = load_runs(client, experiment_name, parent_run_id)
    best = select_best(runs, metric)
    parent = client.get_run(parent_run_id) if parent_run_id else None
    swept = (
        [k.removeprefix("sweep.params.") for k in parent.data.params if k.startswith("sweep.params.")] if parent else []
    )
    name = parent.info.run_name if parent else experiment_name
    params = varying_params(runs, swept)
    folder = Path(output_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    plot_metric_vs_params(runs, params, metric, folder / "metric_vs_params.png")
    plot_learning_curves(client, runs, metric, folder / "learning_curves.png")
    has_confusion = best_confusion(client, best["run_id"], folder)
    table, groups = summary_table(runs, params, metric), seed_groups(runs)
    seeded = not groups.empty and (groups["runs"] > 1).any()
    is_sweep = parent is not None and SWEEP_TAG in parent.data.tags
    learnt = logged_sweep_analysis(client, parent_run_id, folder) if is_sweep else None
    sections = [
        f"# {name}: {len(runs)} runs in experiment `{experiment_name}`\n",
        headline(best, metric),
        "Validation columns are at each run's best epoch; test columns are that checkpoint on the test split.\n",
        markdown_table(table),
        *(["\n## Mean ± std over seeds, per config\n\n" + markdown_table(groups)] if seeded else []),
        f"\n## {metric} against the hyperparameters\n\n![](metric_vs_params.png)\n",
        "\n## Learning curves\n\n![](learning_curves.png)\n",
        *([sweep_analysis_markdown(learnt, folder)] if learnt else []),
        *(
            ["\n## Confusion matrix of the best run (test split)\n\n![](best_confusion_matrix.png)\n"]
            if has_confusion
            else []
        ),
    ]
    (folder / "report.md").write_text("\n".join(sections))
    print(table.to_string(index=False))
    if seeded:
        print("\nmean ± std (sample std) over the runs of each config:")
        print(groups.to_string(index=False))
    if is_sweep:
        lines = (
            importances_lines(learnt) if learnt else ["parameter importances: none yet: a sweep logs them as it ends"]
        )
        print("\n" + "\n".join(lines))
    print(f"\nbest run by {metric}: {best['run_id']} ({best['run_name']})")
    print(f"report: {folder / 'report.md'}")
    if parent_run_id:
        client.log_artifacts(parent_run_id, str(folder), REPORT_ARTIFACTS)
    return folder / "report.md"


def headline(best: pd.Series, metric: str) -> str:
    """The best run and its figures, in one sentence: validation (what chose it), then its test score."""
    test = best.get("test/f1_weighted")
    tested = f", test/f1_weighted = {test:.4f}" if test is not None and pd.notna(test) else ""
    return (
        f"Best by `{metric}` (validation, at the kept checkpoint): **{best['run_name']}** (run `{best['run_id']}`), "
        f"{metric} = {best[f'best.{metric}']:.4f}{tested}.\n"
    )


def best_confusion(client, run_id: str, folder: Path) -> bool:
    """The best run's test confusion matrix as `folder/best_confusion_matrix.png`; False for a run with no test
    (pruned, interrupted)."""
    try:
        confusion = client.download_artifacts(run_id, CONFUSION_ARTIFACT, str(folder))
    except Exception:  # noqa: BLE001 - MLflow's errors for a missing artifact vary with the store
        return False
    shutil.move(confusion, folder / "best_confusion_matrix.png")
    shutil.rmtree(folder / "test", ignore_errors=True)
    return True
