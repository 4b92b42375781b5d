"""Prediction sets of finished fits at other settings than the one they ran with, from what they logged.

    python -m scripts.conformal_table RUN_ID [RUN_ID ...] [--alphas 0.1 0.05] [--scores lac aps]

For each run: its kept checkpoint's validation predictions (`val/predictions.csv`, raw) through its temperature
(`calibration/temperature`), and its test predictions (`test/predictions.csv`, already through the temperature);
thresholds fitted on validation (`emo.conformal`, as a fit does), scored on test. Prints one Markdown row per run and
setting: coverage, mean set size, the shares of sizes 0, 1 and 2+, the lowest and highest coverage of a class. The
row of the run's own setting repeats its logged `conformal/test_coverage` (a check of this script).
"""

import argparse
import tempfile

import mlflow
import numpy as np
import pandas as pd

from emo.calibration import log_probabilities, scaled_probabilities
from emo.conformal import fit_sets, membership
from emo.spec import LABELS_TAG, predictions_artifact
from emo.store import resolve_tracking_uri


def logged(client, run_id: str, stage: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's probabilities and true class ids of one stage, in the file's order."""
    frame = pd.read_csv(client.download_artifacts(run_id, predictions_artifact(stage), folder), keep_default_na=False)
    names = [column.removeprefix("p_") for column in frame.columns if column.startswith("p_")]
    return frame[[f"p_{name}" for name in names]].to_numpy(np.float64), frame["label"].map(names.index).to_numpy()


def rows(client, run_id: str, alphas: list[float], scores: list[str]) -> list[str]:
    run = client.get_run(run_id)
    temperature = run.data.metrics.get("calibration/temperature")
    with tempfile.TemporaryDirectory() as folder:
        validation, val_labels = logged(client, run_id, "val", folder)
        test, test_labels = logged(client, run_id, "test", folder)
    if temperature:
        validation = scaled_probabilities(log_probabilities(validation), temperature)
    names = run.data.tags.get(LABELS_TAG, "")
    out = []
    for alpha in alphas:
        for score in scores:
            for conditional in (False, True):
                record = fit_sets(validation, val_labels, alpha, score, conditional)
                inside = membership(test, record)
                covered = inside[np.arange(len(test_labels)), test_labels]
                sizes = inside.sum(axis=1)
                per_class = [covered[test_labels == c].mean() for c in np.unique(test_labels)]
                out.append(
                    f"| {run.info.run_name} | {alpha:g} | {score} | {'per class' if conditional else 'marginal'} | "
                    f"{covered.mean():.4f} | {sizes.mean():.3f} | {(sizes == 0).mean():.3f} | {(sizes == 1).mean():.3f} | "
                    f"{(sizes >= 2).mean():.3f} | {min(per_class):.3f} | {max(per_class):.3f} |"
                )
    logged_coverage = run.data.metrics.get("conformal/test_coverage")
    out.append(f"|   (logged by the fit: coverage {logged_coverage}, T {temperature}, classes {names}) |||||||||||")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.1, 0.05])
    parser.add_argument("--scores", nargs="+", default=["lac", "aps"])
    args = parser.parse_args()
    client = mlflow.MlflowClient(resolve_tracking_uri())
    print(
        "| run | alpha | score | thresholds | coverage | mean size | size 0 | size 1 | size 2+ | class min | class max |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run_id in args.runs:
        print("\n".join(rows(client, run_id, args.alphas, args.scores)))


if __name__ == "__main__":
    main()
