"""`emo report --compare A B`: is A better than B? A paired bootstrap over the predictions both logged, on test
(to report) or on the kept checkpoints' validation (to choose); a sweep parent counts as its trials' mean."""

import mlflow
import pandas as pd

from emo.analysis import frame_label_names, paired_bootstrap
from emo.store import children_filter, logged_predictions


def group_predictions(client, run_id: str, split: str = "test") -> tuple[str, list[pd.DataFrame]]:
    """A run's predictions on a split, or those of every finished trial of a sweep parent; with a name to print."""
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ValueError(f"no run {run_id!r} at {client.tracking_uri}") from None
    children = client.search_runs([run.info.experiment_id], filter_string=children_filter(run_id), max_results=5000)
    members = [child for child in children if child.info.status == "FINISHED"] if children else [run]
    frames = [logged_predictions(client, member, split) for member in members]
    name = f"{run.info.run_name} ({len(frames)} runs)" if children else run.info.run_name
    return name, frames


def compare_runs(client, run_a: str, run_b: str, split: str = "test", draws: int = 10_000) -> dict:
    """Prints A - B in accuracy and macro F1 on a split with a paired bootstrap 95 % interval."""
    name_a, group_a = group_predictions(client, run_a, split)
    name_b, group_b = group_predictions(client, run_b, split)
    labels = frame_label_names(group_a[0])
    if any(frame_label_names(frame) != labels for frame in group_a + group_b):
        raise ValueError(
            f"the runs predict different classes ({labels} in {run_a}): a paired comparison needs the same"
        )
    result = paired_bootstrap(group_a, group_b, labels, draws=draws)
    print(f"A: {name_a} [{run_a}]\nB: {name_b} [{run_b}]")
    print(f"paired bootstrap over the {len(group_a[0])} {split} examples, {draws} draws\n")
    print(f"{'metric':<14}{'A':>8}{'B':>8}{'A - B':>9}   95 % interval        P(B better)")
    for metric, r in result.items():
        print(
            f"{split + '/' + metric:<14}{r['a']:>8.4f}{r['b']:>8.4f}{r['difference']:>+9.4f}   "
            f"[{r['low']:+.4f}, {r['high']:+.4f}]   {r['p_b_better']:.3f}"
        )
    return result
