"""The classes of a data set, from the data: their names, their ids, and each example's label as an id.

`data.labels` fixes the names and their ids (an id is a position in that list); without it, a Hub
dataset's `ClassLabel` names, else the names found in the training split, sorted (by value when every
name is a number), as Hugging Face's run_glue does. A label in a file is a name or, with `data.labels`,
an id into it; a label that is not one of the names stops the run with one line naming file and line.
"""

from collections.abc import Iterable, Sequence

import datasets

from emo.data.formats import DataFormatError


def checked_names(names: Sequence[str], what: str = "--data.labels") -> list[str]:
    """At least two distinct, non-empty names."""
    names = [str(name).strip() for name in names]
    if len(names) < 2 or not all(names):
        raise DataFormatError(f"{what}: give at least two class names, none empty (got {names})")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataFormatError(f"{what}: {', '.join(repeated)} given more than once")
    return names


def names_in(labels: Iterable[str]) -> list[str]:
    """The sorted names of the labels found (by value when all are numbers, so 2 comes before 10)."""
    found = set(labels)
    if all(name.isascii() and name.isdigit() for name in found):
        return sorted(found, key=int)
    return sorted(found)


def label_ids(names: Sequence[str], given: bool) -> dict[str, int]:
    """How a label in a file maps to an id: by its name; with given names, also by its id, or its name in lower case."""
    ids = {name: i for i, name in enumerate(names)}
    if not given:
        return ids
    return {**{str(i): i for i in range(len(names))}, **{name.lower(): i for i, name in enumerate(names)}, **ids}


def encode_batch(batch: dict, ids: dict[str, int]) -> dict:
    return {"label": [ids[label] for label in batch["label"]]}


def encode_labels(split: datasets.Dataset, names: Sequence[str], given: bool) -> datasets.Dataset:
    """The split with `label` as an id into `names` (a `ClassLabel`), `where` dropped; an unknown label is one line."""
    ids, found = label_ids(names, given), {}
    for label, where in zip(split["label"], split["where"], strict=True):
        if label not in found:
            found[label] = ids.get(label, ids.get(label.lower()) if given else None)
        if found[label] is None:
            expected = ", ".join(names) + (f" or 0-{len(names) - 1}" if given else ": the training split's labels")
            raise DataFormatError(f"{where}: unknown label {label!r} (expected one of {expected})")
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(names))})
    return split.map(
        encode_batch, batched=True, fn_kwargs={"ids": found}, features=features, remove_columns=["where"], desc="Labels"
    )


def encode_splits(splits: dict[str, datasets.Dataset], labels: Sequence[str] | None) -> datasets.DatasetDict:
    """Every split's labels as ids of one set of names: `labels`, else the training split's."""
    names = (
        checked_names(labels) if labels else checked_names(names_in(splits["train"]["label"]), "the training labels")
    )
    return datasets.DatasetDict({name: encode_labels(split, names, bool(labels)) for name, split in splits.items()})


def align_hub_labels(splits: datasets.DatasetDict, labels: Sequence[str] | None, name: str) -> datasets.DatasetDict:
    """A Hub dataset's `ClassLabel` names are its classes; `data.labels` may reorder them, not rename them."""
    feature = splits["train"].features["label"]
    if not isinstance(feature, datasets.ClassLabel):
        where = {split: [f"{name} ({split} split, row {i + 1})" for i in range(len(d))] for split, d in splits.items()}
        with_where = {
            split: d.add_column("where", where[split]).cast_column("label", datasets.Value("string"))
            for split, d in splits.items()
        }
        return encode_splits(with_where, labels)
    if not labels or list(labels) == feature.names:
        return splits
    labels = checked_names(labels)
    if sorted(labels) != sorted(feature.names):
        raise DataFormatError(f"--data.labels {list(labels)}: {name} has the classes {feature.names}")
    return splits.align_labels_with_mapping({label: i for i, label in enumerate(labels)}, "label")
