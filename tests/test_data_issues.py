"""emo.audit.data_issues on planted features: what Datalab must find, and only that."""

import numpy as np
import pytest

from emo.audit.data_issues import DatalabFailed, datalab, split_pairs, training_issues

NAMES = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def clusters(rng, per_class: int = 40, dim: int = 16):
    """Six well separated classes of points around their centres (the features of a model that learned them)."""
    centres = rng.normal(size=(len(NAMES), dim)) * 4
    labels = np.repeat(np.arange(len(NAMES)), per_class)
    features = centres[labels] + rng.normal(size=(len(labels), dim))
    probabilities = np.full((len(labels), len(NAMES)), 0.02)
    probabilities[np.arange(len(labels)), labels] = 0.9
    return features, labels, probabilities


def test_a_planted_near_duplicate_and_outlier_are_found_and_nothing_else_is_paired():
    rng = np.random.default_rng(0)
    features, labels, probabilities = clusters(rng)
    copy = features[3] + rng.normal(size=features.shape[1]) * 1e-4  # a text and itself a comma apart
    far = np.full(features.shape[1], 60.0)  # far from every class
    features = np.vstack([features, copy, far])
    labels = np.concatenate([labels, [1, 2]])  # the copy with another label than its twin's (sadness)
    probabilities = np.vstack([probabilities, probabilities[:2]])
    texts = [f"text {i}" for i in range(len(features))]
    found = training_issues(texts, labels, features, probabilities, NAMES)
    assert list(zip(found.near_duplicates["index_a"], found.near_duplicates["index_b"], strict=True)) == [(3, 240)]
    pair = found.near_duplicates.iloc[0]
    assert (pair["text_a"], pair["label_a"], pair["label_b"]) == ("text 3", "sadness", "joy")
    assert found.near_duplicate_examples == 2
    assert found.outliers["index"].iloc[0] == 241 and found.outliers["text"].iloc[0] == "text 241"
    assert list(found.outliers["score"]) == sorted(found.outliers["score"])  # most unusual first
    assert found.class_imbalance == 0  # six even classes


def test_a_rare_class_is_counted_as_imbalance():
    rng = np.random.default_rng(1)
    features, labels, probabilities = clusters(rng)
    keep = (labels != 5) | (np.arange(len(labels)) % 40 < 2)  # surprise: 2 examples of 202
    found = training_issues(
        [str(i) for i in range(keep.sum())], labels[keep], features[keep], probabilities[keep], NAMES
    )
    assert found.class_imbalance == 2


def test_a_test_text_near_a_training_text_is_paired_with_it_and_only_across_splits():
    rng = np.random.default_rng(2)
    features, _, _ = clusters(rng)
    features[9] = features[8] + 1e-4  # two training texts near each other: not a pair across splits
    train_examples = np.arange(len(features)) + 1000  # places in the split, not rows
    test = np.vstack([features[7] + 1e-4, rng.normal(size=(30, features.shape[1])) * 10])
    val = rng.normal(size=(30, features.shape[1])) * 10
    pairs = split_pairs((train_examples, features), {"validation": (np.arange(30), val), "test": (np.arange(31), test)})
    assert pairs[["split", "example", "index"]].values.tolist() == [["test", 0, 1007]]


def test_a_check_datalab_cannot_run_says_why():
    with pytest.raises(DatalabFailed, match="outlier"):
        datalab(np.full((20, 4), np.nan), {"outlier": {}})
