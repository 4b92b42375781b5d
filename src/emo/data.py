"""Emotion data: the CARER tweets from the Hugging Face Hub or a local folder, tokenized once.

Local folders hold one file per split (`train`, `val`/`validation`, `test`) in the original
`text;label` format (`.txt`) or as `.csv`, `.jsonl` (an object a line), `.json` (a list of
objects) or `.parquet` exports with the columns `text` and `label` (label as a name or as the
Hub's id), all text in UTF-8. Every example is checked while it is read: a bad one stops the run
with one `DataFormatError` line that names its file and line. `check_inputs` does that reading
before a model loads.
"""

import codecs
import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from functools import cached_property, partial
from pathlib import Path

import datasets
import lightning as L
import pandas as pd
import pyarrow as pa
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import DataLoader, Sampler
from transformers import AutoTokenizer, DataCollatorWithPadding

from emo import UserError, hub

LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")  # ids as on the Hub
SPLITS = ("train", "validation", "test")
SPLIT_FILE_STEMS = {"train": ("train",), "validation": ("validation", "val", "valid", "dev"), "test": ("test",)}
FILE_SUFFIXES = (".txt", ".csv", ".jsonl", ".json", ".parquet")
FEATURES = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(LABELS))})
# datasets keys a generator's cache by the function's name, not its code: this digest makes stricter checks re-read.
READER_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


class DataFormatError(UserError, ValueError):
    """A data file that cannot be read as emotion examples."""


JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
}


def json_type(value) -> str:
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


def at_line(path: Path, line: int) -> str:
    """`train.txt:3` for the authors' format (as compilers write it), `train.csv: line 3` for exports."""
    return f"{path}:{line}" if path.suffix == ".txt" else f"{path}: line {line}"


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a missing, folder or unreadable path is one line, not an OSError traceback."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataFormatError(f"{path} is a folder, not a file") from None
    except OSError as error:
        raise DataFormatError(f"{path}: cannot read ({error.strerror or error})") from None


def line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte, lines split as the readers split them."""
    lines = io.StringIO(data[:offset].decode("utf-8", errors="replace"), newline=None).read().split("\n")
    return len(lines), len(lines[-1]) + 1


def decode_text(path: Path, data: bytes) -> str:
    """UTF-8 text (a leading byte order mark dropped); other bytes are named by line, not by a UnicodeDecodeError."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataFormatError(f"{path}: UTF-16 text, not UTF-8; save the file as UTF-8")
    nul = data.find(b"\0")
    if nul >= 0:  # text never holds NUL bytes; zip, png, gzip, ... files do, near the start
        raise DataFormatError(
            f"{path}: binary content (a NUL byte at line {line_and_column(data, nul)[0]}), not a text file"
        )
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line, column = line_and_column(data, error.start)
        byte = f"byte 0x{data[error.start]:02x} at column {column}"
        raise DataFormatError(f"{at_line(path, line)}: not UTF-8 text ({byte}); save the file as UTF-8") from None


def read_text(path: Path) -> str:
    return decode_text(path, read_bytes(path))


def text_lines(text: str) -> Iterator[tuple[int, str]]:
    """Numbered lines split at \\n, \\r\\n or \\r, as Python's text files split them (not at \\u2028 and the like)."""
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):
        yield number, line.rstrip("\n")


def split_bytes(path: Path) -> bytes:
    data = read_bytes(path)
    if not data.strip():  # found here, not by datasets' "corresponds to no data" after the fact
        raise DataFormatError(f"{path}: no examples (the file is empty or blank)")
    return data


def split_text(path: Path) -> str:
    return decode_text(path, split_bytes(path))


def label_id(value, where: str) -> int:
    """The Hub id of a label given as a name (`joy`) or as an id (`1`); `1.0`, `true` or null are not labels."""
    text = str(value).strip()
    if text.lower() in LABELS:
        return LABELS.index(text.lower())
    if text.isascii() and text.isdigit() and int(text) < len(LABELS):
        return int(text)
    raise DataFormatError(f"{where}: unknown label {text!r} (expected one of {', '.join(LABELS)} or 0-5)")


def checked_example(text, label, where: str) -> dict:
    if not isinstance(text, str):
        raise DataFormatError(f"{where}: expected text, got {text!r}")
    if not text.strip():
        raise DataFormatError(f"{where}: empty text")
    return {"text": text, "label": label_id(label, where)}


def check_columns(columns, where: str) -> None:
    """Exactly `text` and `label`: a missing one cannot be read, an extra one would be dropped unseen."""
    columns = [str(column) for column in columns]
    missing = [column for column in ("text", "label") if column not in columns]
    if missing:
        raise DataFormatError(f"{where}: missing column(s) {', '.join(missing)} (has {', '.join(columns) or 'none'})")
    extra = [column for column in columns if column not in ("text", "label")]
    if extra:
        raise DataFormatError(f"{where}: unexpected column(s) {', '.join(extra)}; keep only text and label")
    repeated = [column for column, count in Counter(columns).items() if count > 1]
    if repeated:
        raise DataFormatError(f"{where}: repeated column(s) {', '.join(repeated)}")


def read_txt_examples(path: Path) -> Iterator[dict]:
    """The authors' format: `<text>;<label>` a line; blank lines are skipped."""
    for line_number, line in text_lines(split_text(path)):
        if not line.strip():
            continue
        text, separator, label = line.rpartition(";")
        if not separator:
            raise DataFormatError(f"{path}:{line_number}: expected '<text>;<label>', got {line[:60]!r}")
        yield checked_example(text, label, f"{path}:{line_number}")


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of each non-blank row, numbered by the line it starts on (a quoted field may span lines)."""
    rows, line = csv.reader(io.StringIO(split_text(path), newline=""), strict=True), 1
    try:
        for fields in rows:
            if fields:
                yield line, fields
            line = rows.line_num + 1
    except csv.Error as error:
        raise DataFormatError(f"{path}: line {line}: not valid CSV ({error})") from None


def read_csv_examples(path: Path) -> Iterator[dict]:
    # The csv module, not pandas: pandas pads a row with too few fields with empty strings, and skipped blank
    # lines would shift every line number after them.
    rows = csv_rows(path)
    _, header = next(rows, (1, []))
    check_columns(header, str(path))
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataFormatError(f"{path}: line {line}: expected {len(header)} fields, found {len(fields)}")
        record = dict(zip(header, fields, strict=True))
        yield checked_example(record["text"], record["label"], f"{path}: line {line}")


def record_example(record, where: str) -> dict:
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: expected an object with text and label, got {json_type(record)}")
    check_columns(record, where)
    return checked_example(record["text"], record["label"], where)


def read_jsonl_examples(path: Path) -> Iterator[dict]:
    for line_number, line in text_lines(split_text(path)):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"{path}: line {line_number}: not valid JSON ({error.msg} at column {error.colno})"
            ) from None
        yield record_example(record, f"{path}: line {line_number}")


def read_json_examples(path: Path) -> Iterator[dict]:
    try:
        records = json.loads(split_text(path))
    except json.JSONDecodeError as error:
        raise DataFormatError(
            f"{path}: line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    if not isinstance(records, list):
        raise DataFormatError(
            f'{path}: expected a list of records [{{"text": ..., "label": ...}}, ...], got {json_type(records)}'
        )
    for row, record in enumerate(records, start=1):
        yield record_example(record, f"{path}: row {row}")


def read_parquet_examples(path: Path) -> Iterator[dict]:
    try:  # the pyarrow backend keeps an integer column with nulls integer (numpy's would make every label 1.0)
        table = pd.read_parquet(io.BytesIO(split_bytes(path)), dtype_backend="pyarrow")
    except pa.ArrowException as error:
        reason = str(error).split(": ")[-1].split(". ")[0]  # "Parquet magic bytes not found in footer"
        raise DataFormatError(f"{path}: not a Parquet file ({reason})") from None
    check_columns(table.columns, str(path))
    for row, (text, label) in enumerate(zip(table["text"], table["label"], strict=True), start=1):
        yield checked_example(text, label, f"{path}: row {row}")


TABLE_READERS = {
    ".csv": read_csv_examples,
    ".jsonl": read_jsonl_examples,
    ".json": read_json_examples,
    ".parquet": read_parquet_examples,
}


def read_table_examples(path: Path) -> Iterator[dict]:
    """A csv, jsonl, json (a list of records) or parquet export with `text` and `label` columns."""
    yield from TABLE_READERS[path.suffix](path)


def read_examples(path: str, sha256: str, reader: str) -> Iterator[dict]:
    """Generator behind `Dataset.from_generator`: the digests are arguments so edits of the file or of this module
    invalidate the cache."""
    path = Path(path)
    examples = read_txt_examples(path) if path.suffix == ".txt" else read_table_examples(path)
    first = next(examples, None)
    if first is None:  # a csv header, `[]` or a parquet table without rows; blank files are refused earlier
        raise DataFormatError(f"{path}: no examples (the file has no rows)")
    yield first
    yield from examples


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
            features=FEATURES,
            split=split,
        )
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, DataFormatError):
            raise error.__cause__ from None
        raise


def load_local_splits(data_dir: str) -> datasets.DatasetDict:
    """Every example is checked while the cache is built; later loads of the same files are cache hits."""
    return datasets.DatasetDict({split: load_split(path, split) for split, path in split_files(data_dir).items()})


def read_predict_texts(predict_file: str | None) -> list[str]:
    """The stripped, non-blank lines of the predict file."""
    if not predict_file:
        raise DataFormatError("predict needs --data.predict_file: a text file with one text a line")
    texts = [line.strip() for _, line in text_lines(read_text(Path(predict_file))) if line.strip()]
    if not texts:
        raise DataFormatError(f"{predict_file}: no texts to predict (the file is empty or blank)")
    return texts


def check_inputs(data_dir: str | None, predict_file: str | None, stage: str) -> None:
    """Reads every input of a run without a tokenizer or model, so a bad file stops the CLI before anything loads.

    The splits are read by `load_local_splits` itself: the run then finds them in the datasets cache.
    A Hub dataset (no `data_dir`) is left to `datasets`.
    """
    if stage == "predict":
        read_predict_texts(predict_file)
    elif data_dir:
        load_local_splits(data_dir)


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


def length_buckets(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[int]:
    """Batches of examples of the same length (ties broken at random), the batches in random order.

    Nearly no padding (0.2 % on this dataset, against 3.3 % for transformers' length-grouped sampler).
    """
    keys = torch.tensor(lengths, dtype=torch.float64) + torch.rand(len(lengths), generator=generator, dtype=torch.float64)
    batches = keys.argsort().split(batch_size)
    return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]).tolist()


class EpochSampler(Sampler[int]):
    """The training order of an epoch: shuffled (or length-grouped) from the seed and the epoch number alone.

    So a run resumed mid-epoch from a checkpoint sees the same order as one never stopped, and
    skips the batches its epoch already trained on (`batches_done`, read when the epoch starts).
    """

    def __init__(self, lengths: list[int], batch_size: int, group_by_length: bool, seed: int, batches_done=lambda: 0):
        self.lengths = lengths
        self.batch_size = batch_size
        self.group_by_length = group_by_length
        self.seed = seed
        self.batches_done = batches_done
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it before every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.group_by_length:
            order = length_buckets(self.lengths, self.batch_size, generator)
        else:
            order = torch.randperm(len(self.lengths), generator=generator).tolist()
        return iter(order[self.batches_done() * self.batch_size :])


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning may checkpoint mid-epoch: its position is Lightning's own restored batch count."""

    def state_dict(self) -> dict:
        return {"seed": self.sampler.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.sampler.seed:
            raise DataFormatError(f"the checkpoint's training order has seed {state.get('seed')}, this run {self.sampler.seed}")


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
        group_by_length: Batch training examples of the same length (no padding, faster), batches in random order.
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
        self.predict_texts: list[str] = []  # in the order of the predict file
        self.predict_lines: list[int] = []  # for each example, in the sorted order it runs in, its index in predict_texts

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
        if self.trainer is not None and self.trainer.state.fn == "predict":
            return  # predict reads its own file only: no training data needed
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
            try:
                splits["train"] = splits["train"].train_test_split(
                    train_size=self.hparams.train_size, stratify_by_column="label", seed=self.hparams.subset_seed
                )["train"]
            except ValueError as error:  # e.g. fewer examples than classes: no stratified subset exists
                raise DataFormatError(f"--data.train_size {self.hparams.train_size}: {error}") from None
        return splits

    def tokenize_function(self):
        # A plain function of (tokenizer, max_length): datasets hashes it to key the cache.
        return partial(tokenize_texts, tokenizer=self.tokenizer, max_length=self.hparams.max_length)

    def tokenized_splits(self) -> dict[str, datasets.Dataset]:
        splits = self.raw_splits().map(self.tokenize_function(), batched=True, desc="Tokenizing")
        # Evaluation order does not change the metrics; sorting by length minimises padding. `example`
        # keeps each example's line in its split, so predictions map back to texts (and runs pair up).
        for split in ("validation", "test"):
            splits[split] = splits[split].add_column("example", list(range(len(splits[split])))).sort("length")
        return dict(splits)

    def tokenized_predict_texts(self) -> datasets.Dataset:
        self.predict_texts = read_predict_texts(self.hparams.predict_file)
        lines = datasets.Dataset.from_dict({"text": self.predict_texts, "line": range(len(self.predict_texts))})
        # Sorted by length, as validation and test: batches of similar length carry little padding.
        tokenized = lines.map(self.tokenize_function(), batched=True).sort("length")
        self.predict_lines = tokenized["line"]
        return tokenized

    def model_inputs(self, split: str) -> datasets.Dataset:
        examples = self.splits[split]
        return examples.remove_columns([c for c in ("text", "length", "line") if c in examples.column_names])

    def eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.model_inputs(split),
            batch_size=self.hparams.eval_batch_size,
            collate_fn=self.collator,
            num_workers=self.hparams.num_workers,
        )

    def batches_done(self) -> int:
        """Batches of the current epoch already trained: non-zero only when resuming mid-epoch."""
        trainer = self.trainer
        if trainer is None or trainer.world_size > 1:
            return 0  # with several processes Lightning splits the order itself: a resumed epoch starts over
        return trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSampler(self.splits["train"]["length"], self.hparams.batch_size, self.hparams.group_by_length,
                               seed=torch.initial_seed(), batches_done=self.batches_done)  # fmt: skip
        resumable = self.trainer is None or self.trainer.world_size == 1
        return (ResumableLoader if resumable else DataLoader)(
            self.model_inputs("train"),
            batch_size=self.hparams.batch_size,
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
