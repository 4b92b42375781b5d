"""The test split audited by a model that never saw it: which test labels are likely wrong, and accuracy without them.

    python -m scripts.test_split_audit --run RUN_ID

A fit's `test/predictions.csv` holds, for every test example, the probabilities of a model trained on the
training split only: what confident learning needs (as an audit's out-of-fold probabilities). The same
`cleanlab` rule as `emo audit` flags the test labels; printed and logged on the run: accuracy on all test
examples beside accuracy on those not flagged, `test_audit/label_issues.csv`. A sweep parent's run id uses
its trials' predictions, each audited by its own model.
"""

import argparse

import mlflow
import numpy as np

from emo.analysis import frame_label_names
from emo.audit.issues import label_issues
from emo.report.compare import group_predictions
from emo.store import resolve_tracking_uri


def audit_predictions(frame) -> dict:
    names = frame_label_names(frame)
    given = frame["label"].map(names.index).to_numpy()
    probabilities = frame[[f"p_{name}" for name in names]].to_numpy()
    issues = label_issues(frame["text"].tolist(), given, probabilities, names)
    correct = probabilities.argmax(axis=1) == given
    kept = np.ones(len(frame), dtype=bool)
    kept[issues["index"].to_numpy()] = False
    return {
        "issues": issues,
        "examples": len(frame),
        "flagged": len(issues),
        "acc_all": float(correct.mean()),
        "acc_unflagged": float(correct[kept].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a fit's run id (or a sweep parent's)")
    args = parser.parse_args()
    client = mlflow.MlflowClient(resolve_tracking_uri())
    name, frames = group_predictions(client, args.run, "test")
    results = [audit_predictions(frame) for frame in frames]
    for result in results:
        print(
            f"{result['examples']} test examples, {result['flagged']} flagged: accuracy {result['acc_all']:.4f} on "
            f"all, {result['acc_unflagged']:.4f} on those not flagged"
        )
    if len(results) == 1:
        result = results[0]
        client.log_text(args.run, result["issues"].to_csv(index=False), "test_audit/label_issues.csv")
        for key in ("flagged", "acc_all", "acc_unflagged"):
            client.log_metric(args.run, f"test_audit/{key}", result[key])
    print(
        f"{name}: mean accuracy {np.mean([r['acc_all'] for r in results]):.4f} on all, "
        f"{np.mean([r['acc_unflagged'] for r in results]):.4f} on those not flagged"
    )


if __name__ == "__main__":
    main()
