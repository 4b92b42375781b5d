"""Texts that leak from training into validation or test, and texts repeated in training, counted as exact strings.

"The same text" is the same string once leading and trailing whitespace is stripped (`same_text`): case, the spaces
inside and punctuation all count, so `i feel fine`, `I feel fine` and `i feel  fine` are three texts. An example of
validation or test *stands in train* when the training split holds the same text, whatever its label there. A training
text is *repeated* when two or more training examples hold it, *conflicting* when they carry more than one label.
Near-duplicates (a word or a punctuation mark apart) are not counted here.

Pure counting over lists of texts and labels (no files, no MLflow): a dictionary of the training texts, a fraction of a
second for CARER's 20,000 examples. `emo.data.module` counts the splits a run uses; the tracking logs the counts
(`Leaks.metrics`) and the examples (`Leaks.table`).
"""

import dataclasses
from collections.abc import Mapping, Sequence

import pandas as pd

from emo.data.formats import DataFormatError
from emo.spec import IN_TRAIN_METRICS, TRAIN_CONFLICTING, TRAIN_DUPLICATES


def same_text(text: str) -> str:
    """What two texts must share to be the same text: the string itself, leading and trailing whitespace stripped."""
    return text.strip()


def in_texts(texts: Sequence[str], others: Sequence[str]) -> list[int]:
    """The positions in `texts` of the examples whose text is also one of `others` (the same text, `same_text`)."""
    known = {same_text(text) for text in others}
    return [i for i, text in enumerate(texts) if same_text(text) in known]


def leaked(train: Sequence[str], evaluated: Sequence[str]) -> list[int]:
    """The positions of the training examples whose text stands in `evaluated` (validation and test), which
    `data.drop_leaks` drops; dropping every training example is one line."""
    positions = in_texts(train, evaluated)
    if len(positions) == len(train):
        raise DataFormatError(
            f"--data.drop_leaks: the text of every training example ({len(train)}) stands in validation or test; "
            "nothing is left to train on"
        )
    return positions


@dataclasses.dataclass(frozen=True)
class Split:
    """The texts and labels (names) of one split, in the order the run uses them."""

    texts: Sequence[str]
    labels: Sequence[str]


@dataclasses.dataclass(frozen=True)
class Leaks:
    """What `find_leaks` found: for each evaluation split, its examples whose text stands in train; the repeated
    training texts; and, for every text in either, the positions of the training examples that hold it."""

    splits: Mapping[str, Split]
    in_train: dict[str, list[int]]  # evaluation split -> positions (0-based) of its examples that stand in train
    repeated: list[str]  # training texts (`same_text`) held by two or more examples, in order of first use
    train_positions: dict[str, list[int]]  # such a text -> the positions of the training examples that hold it

    def train_labels(self, text: str) -> list[str]:
        """The labels of the training examples that hold `text`, in training order."""
        return [self.splits["train"].labels[i] for i in self.train_positions[same_text(text)]]

    @property
    def conflicting(self) -> list[str]:
        """The repeated training texts whose examples carry more than one label."""
        return [text for text in self.repeated if len(set(self.train_labels(text))) > 1]

    def metrics(self) -> dict[str, int]:
        """`data/val_in_train`, `data/test_in_train` (examples), `data/train_duplicates`, `data/train_conflicting`
        (distinct texts)."""
        counts = {IN_TRAIN_METRICS[split]: len(positions) for split, positions in self.in_train.items()}
        return {**counts, TRAIN_DUPLICATES: len(self.repeated), TRAIN_CONFLICTING: len(self.conflicting)}

    def table(self) -> pd.DataFrame:
        """One row per example counted: `split`, `example` (its position in the split, as in the run's predictions),
        `text`, `label`, `train_labels` (the labels the training split gives the same text, `|`-joined, training
        order). Test first, then validation, then the repeated training texts, each text's examples together."""
        rows = []
        for split in sorted(self.in_train, key=lambda split: split != "test"):
            for i in self.in_train[split]:
                text = self.splits[split].texts[i]
                rows.append((split, i, text, self.splits[split].labels[i], "|".join(self.train_labels(text))))
        train = self.splits["train"]
        for text in self.repeated:
            labels = "|".join(self.train_labels(text))
            rows += [("train", i, train.texts[i], train.labels[i], labels) for i in self.train_positions[text]]
        return pd.DataFrame(rows, columns=["split", "example", "text", "label", "train_labels"])


def find_leaks(splits: Mapping[str, Split]) -> Leaks:
    """Counts in `splits` (`train` and any evaluation splits, e.g. `validation` and `test`) the examples of each
    evaluation split whose text stands in train, and the training texts held by more than one example."""
    positions: dict[str, list[int]] = {}
    for i, text in enumerate(splits["train"].texts):
        positions.setdefault(same_text(text), []).append(i)
    in_train = {
        split: [i for i, text in enumerate(examples.texts) if same_text(text) in positions]
        for split, examples in splits.items()
        if split != "train"
    }
    repeated = [text for text, held in positions.items() if len(held) > 1]
    wanted = set(repeated) | {same_text(splits[s].texts[i]) for s, found in in_train.items() for i in found}
    return Leaks(splits, in_train, repeated, {text: positions[text] for text in wanted})
