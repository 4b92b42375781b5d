"""The LightningDataModule: labelled texts split three ways, tokenized once (cached by `datasets`), padded per batch."""

import hashlib
import sys
from functools import cached_property, partial
from typing import Literal

import datasets
import lightning as L
import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt, restricted_number_type
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorWithPadding

from emo import hub
from emo.data.folds import audited, stratified_folds
from emo.data.formats import DataFormatError
from emo.data.labels import checked_names
from emo.data.leaks import Leaks, Split, find_leaks
from emo.data.sampler import EpochSampler, ResumableLoader
from emo.data.splits import content_digest, leaked_from, load_hub_splits, load_local_splits, read_predict_texts
from emo.spec import IN_TRAIN_METRICS, LEAKS_ARTIFACT, SPLITS

Folds = restricted_number_type("Folds", int, [(">=", 2)])  # an audit needs a fold to hold out and one to train on


def batch_size_of(batch: dict) -> int:
    return len(batch["input_ids"])


def split_as_read(examples: datasets.Dataset) -> Split:
    """A split's texts and labels (as names), in its order, for `emo.data.leaks`."""
    names = examples.features["label"].names
    return Split(examples["text"], [names[label] for label in examples["label"]])


def tokenize_texts(batch: dict, tokenizer, max_length: int) -> dict:
    return tokenizer(batch["text"], truncation=True, max_length=max_length, return_length=True)


class EmotionDataModule(L.LightningDataModule):
    """Labelled texts (CARER's emotions by default) split three ways, tokenized once (cached by `datasets`), padded per batch.

    Args:
        dataset: Hub dataset id, used when `data_dir` is not set.
        dataset_config: Hub dataset configuration.
        data_dir: A local folder with train/val/test files; replaces the Hub.
        labels: The class names in id order (a label in a file may then also be its id). `null`: from the data, the Hub
            dataset's `ClassLabel` names, the folder's dataset_info.json, or the sorted names in the training split.
        tokenizer_name_or_path: Linked to `model.model_name_or_path` by the CLI.
        max_length: Longer texts are truncated to this many tokens.
        batch_size: Training examples per batch (per device).
        eval_batch_size: Examples per validation/test/predict batch.
        group_by_length: Batch training examples of the same length (no padding, faster), batches in random order.
        train_size: Train on a stratified random subset of this many examples.
        subset_seed: Seed of that subset.
        num_workers: DataLoader worker processes.
        predict_file: A text file with one text a line, for `predict`.
        holdout_fold: Train on the other folds of the training split and keep this one aside (`emo audit` sets it).
        folds: How many stratified folds the training split is dealt into (with `holdout_fold`).
        fold_seed: The seed of that deal.
        audit_run: Train on the training split as this `emo audit` run (its MLflow run id) audited it: the examples
            it flagged dropped, or relabelled (`audit_action`). The audit must be of these examples (their digest).
        audit_action: `drop` the flagged examples, or `relabel` them with the class the audit suggests.
        drop_leaks: Train without the examples whose text stands in validation or test (the same text as
            `emo.data.leaks` counts it: the string, stripped). Either way a run logs the leaks it trains with.
    """

    def __init__(
        self,
        dataset: str = "dair-ai/emotion",
        dataset_config: str | None = "split",
        data_dir: str | None = None,
        labels: list[str] | None = None,
        tokenizer_name_or_path: str = "distilbert-base-uncased",
        max_length: PositiveInt = 128,
        batch_size: PositiveInt = 16,
        eval_batch_size: PositiveInt = 64,
        group_by_length: bool = False,
        train_size: PositiveInt | None = None,
        subset_seed: int = 0,
        num_workers: NonNegativeInt = 0,
        predict_file: str | None = None,
        holdout_fold: NonNegativeInt | None = None,
        folds: Folds = 5,
        fold_seed: int = 0,
        audit_run: str | None = None,
        audit_action: Literal["drop", "relabel"] = "drop",
        drop_leaks: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.splits: dict[str, datasets.Dataset] = {}
        self.digests: dict[str, str] = {}
        self.train_as_read_digest: str | None = None  # of the training split before a fold or an audit changed it
        self.audit_changed = 0  # training examples the audit run dropped or relabelled
        self.leaks: Leaks | None = None  # of the splits as the run uses them (after every data setting)
        self.leaks_dropped = 0  # training examples drop_leaks dropped
        self.predict_texts: list[str] = []  # in the order of the predict file
        self.predict_lines: list[
            int
        ] = []  # for each example, in the sorted order it runs in, its index in predict_texts

    @property
    def source(self) -> str:
        """Where the examples come from: the local folder or the Hub id."""
        return self.hparams.data_dir or self.hparams.dataset

    @cached_property
    def label_names(self) -> list[str]:
        """The class names in id order: `labels` as given, else as the data says (read once, then from the cache)."""
        if self.hparams.labels:
            return checked_names(self.hparams.labels)
        return self.raw_splits()["train"].features["label"].names

    @cached_property
    def tokenizer(self):
        return hub.from_pretrained(AutoTokenizer, self.hparams.tokenizer_name_or_path, what="tokenizer")

    @cached_property
    def collator(self):
        return DataCollatorWithPadding(self.tokenizer)

    def prepare_data(self):
        if self.trainer is not None and self.trainer.state.fn == "predict":
            return  # predict reads its own file only: no training data needed
        if self.digests:
            return  # already read and tokenized (`setup`) in this process
        self.tokenized_splits()  # downloads, parses and tokenizes into the datasets cache, on one process

    def setup(self, stage: str):
        if stage == "predict":
            self.splits["predict"] = self.tokenized_predict_texts()
            return
        if self.digests:
            return  # the test after a fit reuses the splits the fit loaded
        self.splits = self.tokenized_splits()
        self.say_test_leaks()
        # Of the examples in file order (validation and test run sorted by length, which depends on the tokenizer).
        self.digests = {split: content_digest(self.splits[split].sort("example")) for split in SPLITS}

    @property
    def data_digest(self) -> str:
        return hashlib.sha256("".join(self.digests[split] for split in SPLITS).encode()).hexdigest()

    def raw_splits(self) -> datasets.DatasetDict:
        if self.hparams.data_dir:
            splits = load_local_splits(self.hparams.data_dir, self.hparams.labels)
        else:
            splits = load_hub_splits(self.hparams.dataset, self.hparams.dataset_config, self.hparams.labels)
        self.train_as_read_digest = content_digest(splits["train"])
        if self.hparams.audit_run:
            splits["train"], self.audit_changed = audited(
                splits["train"], self.hparams.audit_run, self.hparams.audit_action, self.train_as_read_digest
            )
        if self.hparams.holdout_fold is not None:
            fold = stratified_folds(splits["train"]["label"], self.hparams.folds, self.hparams.fold_seed)
            indexed = splits["train"].add_column("index", list(range(len(fold))))  # its place in the split as read
            splits["heldout"] = indexed.select(np.flatnonzero(fold == self.hparams.holdout_fold))
            splits["train"] = splits["train"].select(np.flatnonzero(fold != self.hparams.holdout_fold))
        if self.hparams.drop_leaks:
            splits["train"] = self.without_leaks(splits)
        if self.hparams.train_size and self.hparams.train_size < len(splits["train"]):
            try:
                splits["train"] = splits["train"].train_test_split(
                    train_size=self.hparams.train_size, stratify_by_column="label", seed=self.hparams.subset_seed
                )["train"]
            except ValueError as error:  # e.g. fewer examples than classes: no stratified subset exists
                raise DataFormatError(f"--data.train_size {self.hparams.train_size}: {error}") from None
        self.leaks = find_leaks({split: split_as_read(splits[split]) for split in SPLITS})
        return splits

    def without_leaks(self, splits: datasets.DatasetDict) -> datasets.Dataset:
        """The training split without the examples whose text stands in validation or test (`drop_leaks`)."""
        train = splits["train"]
        dropped = leaked_from(splits)
        self.leaks_dropped = len(dropped)
        return train.select(np.setdiff1d(np.arange(len(train)), dropped))

    def say_test_leaks(self) -> None:
        """One line on the console when test examples stand in train (a model that learnt them is right by rote)."""
        leaked = len(self.leaks.in_train["test"]) if self.leaks else 0
        if leaked and (self.trainer is None or self.trainer.is_global_zero):
            share = leaked / len(self.splits["test"])
            print(
                f"emo: warning: {leaked} test examples ({share:.2%}) stand word for word in the training split "
                f"({IN_TRAIN_METRICS['test']}; listed in the run's {LEAKS_ARTIFACT}); --data.drop_leaks true trains "
                "without them",
                file=sys.stderr,
            )

    def tokenize_function(self):
        # A plain function of (tokenizer, max_length): datasets hashes it to key the cache.
        return partial(tokenize_texts, tokenizer=self.tokenizer, max_length=self.hparams.max_length)

    def tokenized_splits(self) -> dict[str, datasets.Dataset]:
        splits = self.raw_splits().map(self.tokenize_function(), batched=True, desc="Tokenizing")
        # Evaluation order does not change the metrics; sorting by length minimises padding. `example`
        # keeps each example's line in its split, so predictions map back to texts (and runs pair up).
        for split in ("validation", "test"):
            splits[split] = splits[split].add_column("example", list(range(len(splits[split])))).sort("length")
        splits["train"] = splits["train"].add_column("example", list(range(len(splits["train"]))))  # a teacher's row
        if "heldout" in splits:
            splits["heldout"] = splits["heldout"].sort("length")
        return dict(splits)

    def heldout_loader(self) -> DataLoader:
        """The held-out fold (`holdout_fold`), its `index` column kept: the examples' places in the split as read."""
        examples = self.splits["heldout"]
        return DataLoader(
            examples.remove_columns(["text", "length"]),
            batch_size=self.hparams.eval_batch_size,
            collate_fn=self.collator,
            num_workers=self.hparams.num_workers,
        )

    def tokenized_predict_texts(self) -> datasets.Dataset:
        self.predict_texts = read_predict_texts(self.hparams.predict_file)
        lines = datasets.Dataset.from_dict({"text": self.predict_texts, "line": range(len(self.predict_texts))})
        # Sorted by length, as validation and test: batches of similar length carry little padding.
        tokenized = lines.map(self.tokenize_function(), batched=True).sort("length")
        self.predict_lines = tokenized["line"]
        return tokenized

    def model_inputs(self, split: str) -> datasets.Dataset:
        examples = self.splits[split]
        return examples.remove_columns([c for c in ("text", "length", "line", "index") if c in examples.column_names])

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
        sampler = EpochSampler(
            self.splits["train"]["length"],
            self.hparams.batch_size,
            self.hparams.group_by_length,
            seed=torch.initial_seed(),
            batches_done=self.batches_done,
        )
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
