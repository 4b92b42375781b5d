"""Texts shared between the splits, counted as exact strings (`emo.data.leaks`): on a made-up data set whose answers are
known, on CARER as the issue counts it, dropped from training by `data.drop_leaks`, and logged by every fit."""

import pandas as pd

from emo.data import EmotionDataModule, load_local_splits
from emo.data.leaks import Split, find_leaks, same_text
from emo.data.module import split_as_read

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
