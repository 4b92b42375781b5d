"""Emotion data: the CARER tweets from the Hugging Face Hub or a local folder, tokenized once.

Local folders hold one file per split (`train`, `val`/`validation`, `test`) in the original
`text;label` format (`.txt`) or as `.csv`, `.jsonl`/`.json` or `.parquet` exports with the
columns `text` and `label` (label as a name or as the Hub's id). Every example is checked
while it is read: a bad one stops the run with an error that names its file and line.
"""

import hashlib
from collections.abc import Iterator
from functools import cached_property, partial
from pathlib import Path

import datasets
import lightning as L
import pandas as pd
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler

from emo import hub

LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")  # ids as on the Hub
SPLITS = ("train", "validation", "test")
SPLIT_FILE_STEMS = {"train": ("train",), "validation": ("validation", "val", "valid", "dev"), "test": ("test",)}
FILE_SUFFIXES = (".txt", ".csv", ".jsonl", ".json", ".parquet")
FEATURES = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(LABELS))})


class DataFormatError(ValueError):
    """A data file that cannot be read as emotion examples."""


def label_id(value, where: str) -> int:
    """The Hub id of a label given as a name (`joy`) or as an id (`1`)."""
    text = str(value).strip()
    if text.lower() in LABELS:
        return LABELS.index(text.lower())
    if text.isdigit() and int(text) < len(LABELS):
        return int(text)
    raise DataFormatError(f"{where}: unknown label {text!r} (expected one of {', '.join(LABELS)} or 0-5)")


def checked_example(text, label, where: str) -> dict:
    if not isinstance(text, str) or not text.strip():
        raise DataFormatError(f"{where}: empty text")
    return {"text": text, "label": label_id(label, where)}


def read_txt_examples(path: Path) -> Iterator[dict]:
    """The authors' format: `<text>;<label>` a line; blank lines are skipped."""
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            text, separator, label = line.rpartition(";")
            if not separator:
                raise DataFormatError(f"{path}:{line_number}: expected '<text>;<label>', got {line[:60]!r}")
            yield checked_example(text, label, f"{path}:{line_number}")


def read_table_examples(path: Path) -> Iterator[dict]:
    """A csv, json(l) or parquet export with `text` and `label` columns."""
    if path.suffix == ".csv":
        table, first_line = pd.read_csv(path, dtype=str, keep_default_na=False), 2  # line 1 is the header
    elif path.suffix in (".jsonl", ".json"):
        table, first_line = pd.read_json(path, lines=path.suffix == ".jsonl", dtype=False), 1
    else:
        table, first_line = pd.read_parquet(path), 1
    missing = {"text", "label"} - set(table.columns)
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {', '.join(sorted(missing))} (has {', '.join(table.columns)})")
    place = "row" if path.suffix in (".parquet", ".json") else "line"
    for offset, (text, label) in enumerate(zip(table["text"], table["label"], strict=True)):
        yield checked_example(text, label, f"{path}: {place} {offset + first_line}")


def read_examples(path: str, sha256: str) -> Iterator[dict]:
    """Generator behind `Dataset.from_generator`: the digest is an argument so edits invalidate the cache."""
    path = Path(path)
    yield from read_txt_examples(path) if path.suffix == ".txt" else read_table_examples(path)


def find_split_file(data_dir: Path, split: str) -> Path:
    candidates = [data_dir / f"{stem}{suffix}" for stem in SPLIT_FILE_STEMS[split] for suffix in FILE_SUFFIXES]
    found = [path for path in candidates if path.is_file()]
    if len(found) != 1:
        problem = "no file" if not found else f"several files ({', '.join(p.name for p in found)})"
        names = "/".join(SPLIT_FILE_STEMS[split])
        raise DataFormatError(f"{data_dir}: {problem} for the {split} split (expected one of {names} with {'/'.join(FILE_SUFFIXES)})")
    return found[0]


def load_local_splits(data_dir: str) -> datasets.DatasetDict:
    splits = {}
    for split in SPLITS:
        path = find_split_file(Path(data_dir), split)
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            splits[split] = datasets.Dataset.from_generator(
                read_examples, gen_kwargs={"path": str(path.resolve()), "sha256": sha256}, features=FEATURES, split=split
            )
        except datasets.exceptions.DatasetGenerationError as error:
            if isinstance(error.__cause__, DataFormatError):
                raise error.__cause__ from None
            raise
    return datasets.DatasetDict(splits)


def load_hub_splits(name: str, config: str | None) -> datasets.DatasetDict:
    hub.require(name, what="dataset")
    splits = datasets.load_dataset(name, config)
    names = splits["train"].features["label"].names
    if tuple(names) != LABELS:
        raise DataFormatError(f"{name}: labels {names} differ from the emotion labels {list(LABELS)}")
    return datasets.DatasetDict({split: splits[split] for split in SPLITS})


def content_digest(split: datasets.Dataset) -> str:
    """sha256 of the examples themselves, whatever file or cache they came from."""
    digest = hashlib.sha256()
    for text, label in zip(split["text"], split["label"], strict=True):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


def batch_size_of(batch: dict) -> int:
    return len(batch["input_ids"])


def tokenize_texts(batch: dict, tokenizer, max_length: int) -> dict:
    return tokenizer(batch["text"], truncation=True, max_length=max_length, return_length=True)


class EmotionDataModule(L.LightningDataModule):
    """The emotion splits, tokenized once (cached by `datasets`), padded per batch.

    Args:
        dataset: Hub dataset id, used when `data_dir` is not set.
        dataset_config: Hub dataset configuration.
        data_dir: A local folder with train/val/test files; replaces the Hub.
        tokenizer_name_or_path: Linked to `model.model_name_or_path` by the CLI.
        max_length: Longer texts are truncated to this many tokens.
        batch_size: Training examples per batch (per device).
        eval_batch_size: Examples per validation/test/predict batch.
        group_by_length: Batch training examples of similar length (less padding, faster).
        train_size: Train on a stratified random subset of this many examples.
        subset_seed: Seed of that subset.
        num_workers: DataLoader worker processes.
        predict_file: A text file with one text a line, for `predict`.
    """

    def __init__(
        self,
        dataset: str = "dair-ai/emotion",
        dataset_config: str | None = "split",
        data_dir: str | None = None,
        tokenizer_name_or_path: str = "distilbert-base-uncased",
        max_length: PositiveInt = 128,
        batch_size: PositiveInt = 16,
        eval_batch_size: PositiveInt = 64,
        group_by_length: bool = False,
        train_size: PositiveInt | None = None,
        subset_seed: int = 0,
        num_workers: NonNegativeInt = 0,
        predict_file: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.label_names = list(LABELS)
        self.splits: dict[str, datasets.Dataset] = {}
        self.digests: dict[str, str] = {}
        self.predict_texts: list[str] = []

    @property
    def source(self) -> str:
        """Where the examples come from: the local folder or the Hub id."""
        return self.hparams.data_dir or self.hparams.dataset

    @cached_property
    def tokenizer(self):
        return hub.from_pretrained(AutoTokenizer, self.hparams.tokenizer_name_or_path, what="tokenizer")

    @cached_property
    def collator(self):
        return DataCollatorWithPadding(self.tokenizer)

    def prepare_data(self):
        self.tokenized_splits()  # downloads, parses and tokenizes into the datasets cache, on one process

    def setup(self, stage: str):
        if stage == "predict":
            self.splits["predict"] = self.tokenized_predict_texts()
            return
        if self.digests:
            return  # the test after a fit reuses the splits the fit loaded
        self.splits = self.tokenized_splits()
        self.digests = {split: content_digest(examples) for split, examples in self.splits.items()}

    @property
    def data_digest(self) -> str:
        return hashlib.sha256("".join(self.digests[split] for split in SPLITS).encode()).hexdigest()

    def raw_splits(self) -> datasets.DatasetDict:
        if self.hparams.data_dir:
            splits = load_local_splits(self.hparams.data_dir)
        else:
            splits = load_hub_splits(self.hparams.dataset, self.hparams.dataset_config)
        if self.hparams.train_size and self.hparams.train_size < len(splits["train"]):
            splits["train"] = splits["train"].train_test_split(
                train_size=self.hparams.train_size, stratify_by_column="label", seed=self.hparams.subset_seed
            )["train"]
        return splits

    def tokenize_function(self):
        # A plain function of (tokenizer, max_length): datasets hashes it to key the cache.
        return partial(tokenize_texts, tokenizer=self.tokenizer, max_length=self.hparams.max_length)

    def tokenized_splits(self) -> dict[str, datasets.Dataset]:
        splits = self.raw_splits().map(self.tokenize_function(), batched=True, desc="Tokenizing")
        # Evaluation order does not change the metrics; sorting by length minimises padding.
        for split in ("validation", "test"):
            splits[split] = splits[split].sort("length")
        return dict(splits)

    def tokenized_predict_texts(self) -> datasets.Dataset:
        if not self.hparams.predict_file:
            raise DataFormatError("predict needs --data.predict_file: a text file with one text a line")
        with open(self.hparams.predict_file, encoding="utf-8") as lines:
            self.predict_texts = [line.strip() for line in lines if line.strip()]
        if not self.predict_texts:
            raise DataFormatError(f"{self.hparams.predict_file}: no texts to predict")
        return datasets.Dataset.from_dict({"text": self.predict_texts}).map(self.tokenize_function(), batched=True)

    def model_inputs(self, split: str) -> datasets.Dataset:
        examples = self.splits[split]
        return examples.remove_columns([c for c in ("text", "length") if c in examples.column_names])

    def eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.model_inputs(split),
            batch_size=self.hparams.eval_batch_size,
            collate_fn=self.collator,
            num_workers=self.hparams.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        train = self.splits["train"]
        sampler = None
        if self.hparams.group_by_length:
            sampler = LengthGroupedSampler(self.hparams.batch_size, lengths=train["length"])
        return DataLoader(
            self.model_inputs("train"),
            batch_size=self.hparams.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader("predict")
