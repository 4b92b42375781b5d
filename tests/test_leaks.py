"""Texts shared between the splits, counted as exact strings (`emo.data.leaks`): on a made-up data set whose answers are
known, on CARER as the issue counts it, dropped from training by `data.drop_leaks`, and logged by every fit."""

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd

from emo.data import EmotionDataModule, load_local_splits
from emo.data.leaks import Split, find_leaks, same_text
from emo.data.module import split_as_read
from emo.fit import EmoCLI
from helpers.data import one_epoch_named, shrunk_args

# Made up so that each rule shows once: the outer spaces of a text do not count; its case and inner spaces do.
TRAIN = [
    ("i feel fine", "joy"),  # 0: repeated (3), one label
    ("i am down", "sadness"),  # 1: stands in validation
    ("so mad", "anger"),  # 2: repeated (4, 6), two labels; stands in test
    ("i feel fine ", "joy"),  # 3: the same text as 0
    ("so mad", "fear"),  # 4
    ("I feel fine", "joy"),  # 5: another text (case)
    ("so mad", "anger"),  # 6
    ("a quiet day", "joy"),  # 7: stands in test twice
]
VALIDATION = [("i am down", "sadness"), ("i am  down", "sadness"), ("a new text", "joy")]  # 1: inner spaces count
TEST = [("so mad", "anger"), ("a quiet day", "fear"), (" a quiet day", "joy"), ("not in train", "joy")]


def split(examples) -> Split:
    return Split([text for text, _ in examples], [label for _, label in examples])


MADE_UP = {"train": split(TRAIN), "validation": split(VALIDATION), "test": split(TEST)}


def test_the_same_text_is_the_string_without_its_outer_whitespace():
    assert same_text("  i feel fine \t") == same_text("i feel fine")
    assert same_text("I feel fine") != same_text("i feel fine") != same_text("i feel  fine")


def test_leaks_repeats_and_conflicts_of_a_made_up_data_set_are_counted_as_known():
    leaks = find_leaks(MADE_UP)
    assert leaks.in_train == {"validation": [0], "test": [0, 1, 2]}
    assert leaks.repeated == ["i feel fine", "so mad"] and leaks.conflicting == ["so mad"]
    assert leaks.metrics() == {
        "data/val_in_train": 1,
        "data/test_in_train": 3,
        "data/train_duplicates": 2,
        "data/train_conflicting": 1,
    }


def test_the_table_lists_every_counted_example_with_the_labels_its_text_has_in_train():
    expected = pd.DataFrame(
        [
            ("test", 0, "so mad", "anger", "anger|fear|anger"),
            ("test", 1, "a quiet day", "fear", "joy"),
            ("test", 2, " a quiet day", "joy", "joy"),
            ("validation", 0, "i am down", "sadness", "sadness"),
            ("train", 0, "i feel fine", "joy", "joy|joy"),
            ("train", 3, "i feel fine ", "joy", "joy|joy"),
            ("train", 2, "so mad", "anger", "anger|fear|anger"),
            ("train", 4, "so mad", "fear", "anger|fear|anger"),
            ("train", 6, "so mad", "anger", "anger|fear|anger"),
        ],
        columns=["split", "example", "text", "label", "train_labels"],
    )
    pd.testing.assert_frame_equal(find_leaks(MADE_UP).table(), expected)


def test_a_data_set_without_shared_texts_counts_nothing():
    leaks = find_leaks({"train": split(TRAIN[:3]), "validation": split(VALIDATION[1:]), "test": split(TEST[3:])})
    assert set(leaks.metrics().values()) == {0} and leaks.table().empty


def test_carer_has_11_test_and_5_validation_examples_in_train_and_31_repeats_30_in_conflict(data_dir):
    splits = load_local_splits(str(data_dir), ["sadness", "joy", "love", "anger", "fear", "surprise"])
    leaks = find_leaks({name: split_as_read(examples) for name, examples in splits.items()})
    assert leaks.metrics() == {
        "data/val_in_train": 5,
        "data/test_in_train": 11,
        "data/train_duplicates": 31,
        "data/train_conflicting": 30,
    }
    table = leaks.table()
    leaked = table[table["split"] != "train"]
    # Every one of them with another label in train: a model that learnt its training set gets them wrong.
    assert not [row for row in leaked.itertuples() if row.label in row.train_labels.split("|")]


def write_made_up(folder) -> str:
    for name, examples in (("train", TRAIN), ("val", VALIDATION), ("test", TEST)):
        (folder / f"{name}.txt").write_text("".join(f"{text};{label}\n" for text, label in examples))
    return str(folder)


def test_drop_leaks_trains_without_the_texts_of_validation_and_test(tmp_path):
    kept = EmotionDataModule(data_dir=write_made_up(tmp_path), drop_leaks=True)
    train = kept.raw_splits()["train"]
    # 1 (validation's), 2, 4, 6 (test's "so mad") and 7 (test's "a quiet day") are gone.
    assert train["text"] == ["i feel fine", "i feel fine ", "I feel fine"] and kept.leaks_dropped == 5
    assert kept.leaks.metrics() == {
        "data/val_in_train": 0,
        "data/test_in_train": 0,
        "data/train_duplicates": 1,
        "data/train_conflicting": 0,
    }
    plain = EmotionDataModule(data_dir=str(tmp_path))
    assert len(plain.raw_splits()["train"]) == len(TRAIN) and plain.leaks_dropped == 0
    assert plain.leaks.metrics()["data/test_in_train"] == 3


def test_the_leaks_are_counted_in_the_training_subset_the_run_uses(small_data_dir):
    module = EmotionDataModule(data_dir=str(small_data_dir), train_size=60)
    splits = module.raw_splits()
    assert len(splits["train"]) == 60 and module.leaks.splits["train"].texts == splits["train"]["text"]


def write_leaky(small_data_dir: Path, folder: Path) -> Path:
    """The small CARER slice (and its dataset_info.json) with known leaks planted in train: the first validation
    example, the first three test examples, a training example twice more (once relabelled)."""
    shutil.copytree(small_data_dir, folder)
    lines = {name: (folder / f"{name}.txt").read_text().splitlines() for name in ("train", "val", "test")}
    text, label = lines["train"][0].rsplit(";", 1)
    other = "joy" if label != "joy" else "sadness"
    planted = [lines["val"][0], *lines["test"][:3], f"{text};{label}", f"{text};{other}", lines["train"][1]]
    (folder / "train.txt").write_text("\n".join(lines["train"] + planted) + "\n")
    return folder


PLANTED = {"data/val_in_train": 1, "data/test_in_train": 3, "data/train_duplicates": 2, "data/train_conflicting": 1}


def fit_leaky(tmp_path, model_dir, data, name: str, *extra: str) -> mlflow.entities.Run:
    cli = EmoCLI(args=["fit", *shrunk_args(tmp_path, model_dir, data, *one_epoch_named(name, ""), *extra)])
    return mlflow.MlflowClient().get_run(cli.trainer.logger.run_id)


def warnings_in(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("emo: warning:")]


def test_a_fit_logs_its_leaks_lists_them_and_says_so_when_test_texts_stand_in_train(
    small_data_dir, tiny_model_dir, tmp_path, tracking_uri, capsys
):
    data = write_leaky(small_data_dir, tmp_path / "data")
    run = fit_leaky(tmp_path, tiny_model_dir, data, "leaks-kept")
    assert {name: run.data.metrics[name] for name in PLANTED} == PLANTED
    assert "data/leaks_dropped" not in run.data.metrics
    table = pd.read_csv(mlflow.MlflowClient().download_artifacts(run.info.run_id, "data/leaks.csv", str(tmp_path)))
    expected = find_leaks({name: split_as_read(s) for name, s in load_local_splits(str(data)).items()}).table()
    pd.testing.assert_frame_equal(table, expected)
    assert list(table["split"]).count("test") == 3 and list(table["split"]).count("train") == 5
    [line] = warnings_in(capsys.readouterr().err)
    assert line.startswith("emo: warning: 3 test examples (3.00%) stand word for word in the training split")


def test_a_fit_with_drop_leaks_trains_without_them_and_says_nothing(
    small_data_dir, tiny_model_dir, tmp_path, tracking_uri, capsys
):
    data = write_leaky(small_data_dir, tmp_path / "data")
    run = fit_leaky(tmp_path, tiny_model_dir, data, "leaks-dropped", "--data.drop_leaks", "true")
    assert run.data.params["data.drop_leaks"] == "True" and run.data.metrics["data/leaks_dropped"] == 4
    assert {name: run.data.metrics[name] for name in PLANTED} == {
        **PLANTED,
        "data/val_in_train": 0,
        "data/test_in_train": 0,
    }
    summary = json.loads(
        Path(mlflow.MlflowClient().download_artifacts(run.info.run_id, "summary.json", str(tmp_path))).read_text()
    )
    assert summary["examples"]["train"] == 300 + 7 - 4
    assert not warnings_in(capsys.readouterr().err)
