"""The splits of a local folder or the Hub, checked and cached by `datasets`, labels as ids; the predict file's texts."""

import hashlib
from pathlib import Path

import datasets

from emo import hub
from emo.data.formats import (
    FILE_SUFFIXES,
    READER_DIGEST,
    DataFormatError,
    read_bytes,
    read_examples,
    read_text,
    text_lines,
)
from emo.data.labels import DATASET_INFO, GIVEN, align_hub_labels, encode_splits, info_names
from emo.data.leaks import leaked
from emo.spec import SPLITS

SPLIT_FILE_STEMS = {"train": ("train",), "validation": ("validation", "val", "valid", "dev"), "test": ("test",)}
AS_READ = datasets.Features(
    {name: datasets.Value("string") for name in ("text", "label", "where")}
)  # labels as written


def find_split_file(data_dir: Path, split: str) -> Path:
    candidates = [data_dir / f"{stem}{suffix}" for stem in SPLIT_FILE_STEMS[split] for suffix in FILE_SUFFIXES]
    found = [path for path in candidates if path.exists()]
    if len(found) != 1:
        problem = "no file" if not found else f"several files ({', '.join(p.name for p in found)})"
        names = "/".join(SPLIT_FILE_STEMS[split])
        raise DataFormatError(
            f"{data_dir}: {problem} for the {split} split (expected one of {names} with {'/'.join(FILE_SUFFIXES)})"
        )
    if found[0].is_dir():  # e.g. a Spark export, which writes train.parquet as a folder of parts
        raise DataFormatError(f"{found[0]} is a folder, not a file")
    return found[0]


def split_files(data_dir: str) -> dict[str, Path]:
    if Path(data_dir).is_file():
        raise DataFormatError(f"--data.data_dir {data_dir} is a file; give the folder that holds train/val/test files")
    return {split: find_split_file(Path(data_dir), split) for split in SPLITS}


def load_split(path: Path, split: str) -> datasets.Dataset:
    sha256 = hashlib.sha256(read_bytes(path)).hexdigest()
    try:
        return datasets.Dataset.from_generator(
            read_examples,
            gen_kwargs={"path": str(path.resolve()), "sha256": sha256, "reader": READER_DIGEST},
            features=AS_READ,
            split=split,
        )
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, DataFormatError):
            raise error.__cause__ from None
        raise


def load_local_splits(data_dir: str, labels: list[str] | None = None) -> datasets.DatasetDict:
    """Every example is checked while the cache is built; later loads of the same files are cache hits.
    Labels become ids of `labels`, else of the names in the folder's dataset_info.json, else of the training split's
    names, sorted (`emo.data.labels`)."""
    files = split_files(data_dir)
    named_by = GIVEN
    if not labels:
        labels, named_by = info_names(data_dir), str(Path(data_dir) / DATASET_INFO)
    return encode_splits({split: load_split(path, split) for split, path in files.items()}, labels, named_by)


def read_predict_texts(predict_file: str | None) -> list[str]:
    """The stripped, non-blank lines of the predict file."""
    if not predict_file:
        raise DataFormatError("predict needs --data.predict_file: a text file with one text a line")
    texts = [line.strip() for _, line in text_lines(read_text(Path(predict_file))) if line.strip()]
    if not texts:
        raise DataFormatError(f"{predict_file}: no texts to predict (the file is empty or blank)")
    return texts


def leaked_from(splits: datasets.DatasetDict) -> list[int]:
    """The positions of the training examples whose text stands in validation or test (`emo.data.leaks.leaked`)."""
    return leaked(splits["train"]["text"], [*splits["validation"]["text"], *splits["test"]["text"]])


def check_data_files(
    data_dir: str | None,
    predict_file: str | None,
    stage: str,
    labels: list[str] | None = None,
    drop_leaks: bool = False,
) -> None:
    """Reads every input of a run without a tokenizer or model, so a bad file stops the CLI before anything loads.

    The splits are read by `load_local_splits` itself: the run then finds them in the datasets cache.
    A Hub dataset (no `data_dir`) is left to `datasets`.
    """
    if stage == "predict":
        read_predict_texts(predict_file)
    elif data_dir:
        splits = load_local_splits(data_dir, labels)
        if drop_leaks:
            leaked_from(splits)  # something is left to train on


def load_hub_splits(name: str, config: str | None, labels: list[str] | None = None) -> datasets.DatasetDict:
    hub.require(name, what="dataset")
    splits = datasets.load_dataset(name, config)
    return align_hub_labels(datasets.DatasetDict({split: splits[split] for split in SPLITS}), labels, name)


def content_digest(split: datasets.Dataset) -> str:
    """sha256 of the examples themselves, whatever file or cache they came from."""
    digest = hashlib.sha256()
    for text, label in zip(split["text"], split["label"], strict=True):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()
