"""The classes of a data set, from the data: their names, their ids, and each example's label as an id.

`data.labels` fixes the names and their ids (an id is a position in that list); without it, the data
set's own: a Hub dataset's `ClassLabel` names, a local folder's `dataset_info.json` (the `datasets`
library's format, as `DatasetInfo.write_to_directory` writes it: `features.label` a `ClassLabel`,
names in id order), else the names found in the training split, sorted (by value when every name is a
number), as Hugging Face's run_glue does. A label in a file is a name or, with given names (either of
the first two), an id into them; a label that is not one of the names stops the run with one line
naming file and line, and what gave the names.
"""

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets

from emo import first_line
from emo.data.formats import DataFormatError, json_type, read_text

GIVEN = "--data.labels"  # names given on the command line or in a config
DATASET_INFO = datasets.config.DATASET_INFO_FILENAME  # dataset_info.json: a folder's own class names


def checked_names(names: Sequence[str], what: str = "--data.labels") -> list[str]:
    """At least two distinct, non-empty names."""
    names = [str(name).strip() for name in names]
    if len(names) < 2 or not all(names):
        raise DataFormatError(f"{what}: give at least two class names, none empty (got {names})")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataFormatError(f"{what}: {', '.join(repeated)} given more than once")
    return names


def info_names(data_dir: str) -> list[str] | None:
    """The class names, in id order, of the folder's `dataset_info.json`; None when it has none. One that cannot be
    read, or names no classes, is one line naming the file."""
    path = Path(data_dir) / DATASET_INFO
    if not path.exists():
        return None
    text = read_text(path)  # a folder, unreadable, binary or not UTF-8: one line
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataFormatError(
            f"{path}: line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    if not isinstance(record, dict):
        raise DataFormatError(f"{path}: expected an object (a datasets DatasetInfo), got {json_type(record)}")
    try:
        info = datasets.DatasetInfo.from_dict(record)  # what DatasetInfo.from_directory does once the JSON is read
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise DataFormatError(f"{path}: not a datasets DatasetInfo ({first_line(error, limit=200)})") from None
    label = (info.features or {}).get("label")
    if not isinstance(label, datasets.ClassLabel):
        raise DataFormatError(
            f"{path}: no class names (expected features.label to be a ClassLabel with names, as datasets writes it)"
        )
    return checked_names(label.names, str(path))


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


def expected_labels(names: Sequence[str], named_by: str | None) -> str:
    """What a label may be, for the line that refuses one: a name or an id of given names, a name found in training."""
    if named_by is None:
        return f"{', '.join(names)}: the training split's labels"
    where = "" if named_by == GIVEN else f", as {named_by} names them"
    return f"{', '.join(names)} or 0-{len(names) - 1}{where}"


def encode_labels(split: datasets.Dataset, names: Sequence[str], named_by: str | None) -> datasets.Dataset:
    """The split with `label` as an id into `names` (a `ClassLabel`), `where` dropped; an unknown label is one line.
    `named_by`: what gave the names (`GIVEN`, a dataset_info.json; a label may then be an id); None: the training
    split's."""
    given = named_by is not None
    ids, found = label_ids(names, given), {}
    for label, where in zip(split["label"], split["where"], strict=True):
        if label not in found:
            found[label] = ids.get(label, ids.get(label.lower()) if given else None)
        if found[label] is None:
            raise DataFormatError(
                f"{where}: unknown label {label!r} (expected one of {expected_labels(names, named_by)})"
            )
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(names))})
    return split.map(
        encode_batch, batched=True, fn_kwargs={"ids": found}, features=features, remove_columns=["where"], desc="Labels"
    )


def encode_splits(
    splits: dict[str, datasets.Dataset], labels: Sequence[str] | None, named_by: str = GIVEN
) -> datasets.DatasetDict:
    """Every split's labels as ids of one set of names: `labels` (given by `named_by`), else the training split's."""
    if labels:
        names = checked_names(labels, named_by)
    else:
        names, named_by = checked_names(names_in(splits["train"]["label"]), "the training labels"), None
    return datasets.DatasetDict({name: encode_labels(split, names, named_by) for name, split in splits.items()})


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
