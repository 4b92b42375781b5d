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
import sys
from typing import Literal

import mlflow
from jsonargparse import auto_cli

from emo import UserError, first_line
from emo.arguments import OneLineParser
from emo.report.compare import compare_runs
from emo.report.write import write_report
from emo.spec import DEFAULT_EXPERIMENT, SWEEP_TAG
from emo.store import resolve_tracking_uri


def report(
    experiment: str = DEFAULT_EXPERIMENT,
    sweep: str | None = None,
    parent_run_id: str | None = None,
    metric: str = "val/f1_weighted",
    output_dir: str = "reports",
    compare: tuple[str, str] | None = None,
    compare_split: Literal["val", "test"] = "test",
) -> None:
    """Compare runs and pick the best by a validation metric.

    Args:
        experiment: MLflow experiment to read.
        sweep: Only the trials of this sweep (its study name).
        parent_run_id: Only the children of this run.
        metric: Validation metric that selects the best run: the largest, or the smallest for a loss or an error.
        output_dir: Where the report folder goes.
        compare: Two run ids (or sweep parent run ids, for groups of seeds): is A better than B?
        compare_split: The split to compare on: `val` (the kept checkpoints' validation) to choose, `test` to report.
    """
    if not metric.startswith("val/"):
        raise UserError(
            f"--metric {metric}: select runs by a validation metric (val/...): test scores must stay unseen"
        )
    client = mlflow.MlflowClient(resolve_tracking_uri())
    if compare:
        try:
            compare_runs(client, *compare, split=compare_split)
        except (ValueError, mlflow.exceptions.MlflowException) as error:
            raise UserError(f"--compare: {first_line(error)}") from None
        return
    if sweep and not parent_run_id:
        found = client.get_experiment_by_name(experiment)
        parents = found and client.search_runs([found.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}'")
        if not parents:
            raise UserError(f"--sweep {sweep}: no sweep of that name in experiment {experiment!r}")
        parent_run_id = parents[0].info.run_id
    try:
        write_report(experiment, parent_run_id, metric, output_dir, client)
    except ValueError as error:
        raise UserError(str(error)) from None


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
    auto_cli(report, args=pair_compare_values(list(sys.argv[1:] if args is None else args)), parser_class=OneLineParser)
