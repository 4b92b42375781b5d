"""Is a fit's calibration as good as its test split can show, and would more than one temperature help?

    python -m scripts.calibration_check RUN_ID [RUN_ID ...]     # fits, or sweep parents (their finished trials)

For each fit, from the predictions it logged (`val/predictions.csv`: the kept checkpoint's raw probabilities;
`test/predictions.csv`: after its temperature, tag `emo.temperature`): the test ECE raw, after the run's
temperature, after the temperature that minimises validation ECE (not NLL; a grid from 0.3 to 2), and after the
top-label map fitted on the same validation predictions (`emo.calibration.fit_top_label_map`, applied as `emo
export`'s served model applies it: isotonic in the top probability, the predicted label unchanged). Beside them
the ECE a perfectly calibrated model with the same test confidences would show on 2,000 examples (mean and 95th
percentile of 200 draws of its right answers): below that floor, no calibrator can be told apart from perfect.
"""

import argparse
import os
import tempfile

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a table, not bars

import mlflow
import numpy as np
import pandas as pd

from emo.analysis import frame_label_names
from emo.calibration import expected_calibration_error, fit_top_label_map, log_probabilities, scaled_probabilities
from emo.export.served import top_label_calibrated
from emo.spec import TEMPERATURE_TAG, predictions_artifact
from emo.store import children_filter, resolve_tracking_uri


def fits(client, run_id: str) -> list:
    run = client.get_run(run_id)
    children = client.search_runs([run.info.experiment_id], filter_string=children_filter(run_id), max_results=5000)
    return [child for child in children if child.info.status == "FINISHED"] if children else [run]


def probabilities_and_labels(client, run, split: str) -> tuple[np.ndarray, np.ndarray]:
    with tempfile.TemporaryDirectory() as folder:
        frame = pd.read_csv(client.download_artifacts(run.info.run_id, predictions_artifact(split), folder))
    names = frame_label_names(frame)
    return frame[[f"p_{name}" for name in names]].to_numpy(), frame["label"].map(names.index).to_numpy()


def ece_temperature(log_validation: np.ndarray, val_labels: np.ndarray) -> float:
    """The temperature of least validation ECE on a log grid from 0.3 to 2 (ECE is not smooth: no gradient)."""
    grid = np.exp(np.linspace(np.log(0.3), np.log(2.0), 400))
    return float(
        min(grid, key=lambda t: expected_calibration_error(scaled_probabilities(log_validation, t), val_labels))
    )


def perfect_floor(confidence: np.ndarray, draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """The ECE of a model whose confidences are these and exactly right on average: mean and 95th percentile."""
    generator = np.random.default_rng(seed)
    as_two = np.stack([confidence, 1 - confidence], axis=1)
    eces = [
        expected_calibration_error(as_two, (generator.random(len(confidence)) >= confidence).astype(int))
        for _ in range(draws)
    ]
    return float(np.mean(eces)), float(np.percentile(eces, 95))


def check(client, run) -> dict:
    validation, val_labels = probabilities_and_labels(client, run, "val")
    logged, labels = probabilities_and_labels(client, run, "test")
    temperature = float(run.data.tags.get(TEMPERATURE_TAG, 1.0))
    raw = scaled_probabilities(log_probabilities(logged), 1 / temperature)  # softmax(T log p): the logits before T
    scaled_validation = scaled_probabilities(log_probabilities(validation), temperature)
    by_ece = scaled_probabilities(log_probabilities(raw), ece_temperature(log_probabilities(validation), val_labels))
    isotonic = top_label_calibrated(logged, **fit_top_label_map(scaled_validation, val_labels))
    assert (isotonic.argmax(axis=1) == logged.argmax(axis=1)).all()
    floor, floor_95 = perfect_floor(isotonic.max(axis=1))
    return {
        "run": f"{run.info.run_name} ({run.info.run_id[:8]})",
        "T": temperature,
        "raw": expected_calibration_error(raw, labels),
        "temperature": expected_calibration_error(logged, labels),
        "ece_temperature": expected_calibration_error(by_ece, labels),
        "isotonic": expected_calibration_error(isotonic, labels),
        "floor": floor,
        "floor_95": floor_95,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="fit run ids, or sweep parents")
    args = parser.parse_args()
    client = mlflow.MlflowClient(resolve_tracking_uri())
    print(
        "| run | T | test ECE raw | after T | after T of least val ECE | after T + isotonic top label | perfect: mean (95th pct) |"
    )
    print("|---|---|---|---|---|---|---|")
    for run_id in args.runs:
        for run in fits(client, run_id):
            r = check(client, run)
            print(
                f"| {r['run']} | {r['T']:.3f} | {r['raw']:.4f} | {r['temperature']:.4f} | {r['ece_temperature']:.4f} | "
                f"{r['isotonic']:.4f} | "
                f"{r['floor']:.4f} ({r['floor_95']:.4f}) |"
            )


if __name__ == "__main__":
    main()
