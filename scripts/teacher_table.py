"""Teachers as classifiers: each model alone and the mean probabilities of each group, on val and test, as a Markdown table.

    .venv/bin/python -m scripts.teacher_table mpnet3=models:/mpnet-emotion-teacher/1,models:/mpnet-emotion-teacher/2,models:/mpnet-emotion-teacher/3 \
        [NAME=TEACHER,TEACHER ...] [--data_dir data/emotion] [--max_length 128]

A teacher is what `--model.teacher` takes (a registered model or a run id), read from MLFLOW_TRACKING_URI.
The probabilities come from `emo.distill.teacher_probabilities`, the code that teaches the students, and
are cached like theirs, so a second table is quick. It tells whether an ensemble is a better teacher
than its members before any student is trained (docs/results.md, "A better teacher").
"""

import argparse
import json

import mlflow
import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from emo.data import content_digest, load_local_splits
from emo.distill import teacher_probabilities
from emo.spec import LABELS_TAG
from emo.store import model_source, resolve_tracking_uri

SPLITS = ("validation", "test")


def scores(labels: np.ndarray, probabilities: np.ndarray) -> list[str]:
    predicted = probabilities.argmax(axis=1)
    return [
        f"{accuracy_score(labels, predicted):.4f}",
        f"{f1_score(labels, predicted, average='weighted'):.4f}",
        f"{f1_score(labels, predicted, average='macro'):.4f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("groups", nargs="+", metavar="NAME=TEACHER,TEACHER", help="a group of teachers, averaged")
    parser.add_argument("--data_dir", default="data/emotion")
    parser.add_argument("--max_length", type=int, default=128)
    args = parser.parse_args()
    groups = {name: teachers.split(",") for name, teachers in (group.split("=", 1) for group in args.groups)}
    teachers = sorted({teacher for members in groups.values() for teacher in members})
    uri = resolve_tracking_uri()
    # The data's classes as the (first) teacher learnt them, in its id order; every teacher is checked against them.
    recorded = mlflow.MlflowClient(uri).get_run(model_source(teachers[0], uri).run_id).data.tags.get(LABELS_TAG)
    label_names = json.loads(recorded) if recorded else None
    splits = load_local_splits(args.data_dir, label_names)
    rows: dict[str, list[str]] = {name: [] for name in [*teachers, *groups]}
    for split in SPLITS:
        texts, labels = list(splits[split]["text"]), np.array(list(splits[split]["label"]))
        digest = content_digest(splits[split])  # of the examples in file order, the order of `texts`
        each = {
            t: teacher_probabilities([t], texts, digest, args.max_length, uri, label_names=label_names)[0].numpy()
            for t in teachers
        }
        for teacher in teachers:
            rows[teacher] += scores(labels, each[teacher])
        for name, members in groups.items():
            rows[name] += scores(labels, np.mean([each[t] for t in members], axis=0))
    print("| teacher | val acc | val weighted F1 | val macro F1 | test acc | test weighted F1 | test macro F1 |")
    print("|---|---|---|---|---|---|---|")
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
