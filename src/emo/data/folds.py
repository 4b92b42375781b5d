"""Stratified, seeded folds of the training split, and what an audit changes in it.

`stratified_folds` deals each class's examples, in a seeded random order, round the folds, so every
fold holds each class's share. A fit with `data.holdout_fold k` trains on the other folds and keeps
fold k aside (`emo audit` predicts it with a model that never saw it). A fit with `data.audit_run`
drops, or relabels with the suggested class, the examples that audit flagged.
"""

import datasets
import numpy as np

from emo.data.formats import DataFormatError
from emo.store import read_audit, resolve_tracking_uri


def stratified_folds(labels, folds: int, seed: int) -> np.ndarray:
    """The fold (0 to folds - 1) of each example: every class dealt round the folds in a seeded random order."""
    labels = np.asarray(labels)
    assignment = np.empty(len(labels), dtype=np.int64)
    generator = np.random.default_rng(seed)
    start = 0
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        assignment[members] = (start + np.arange(len(members))) % folds
        start += len(members)  # the next class continues the round, so the folds' sizes differ by one at most
    return assignment


def check_folds(labels, folds: int, names: list[str]) -> None:
    """Each class needs an example in every fold: a fold's model must see it, and each fold must hold it out."""
    counts = np.bincount(np.asarray(labels), minlength=len(names))
    few = [f"{names[i]} ({count})" for i, count in enumerate(counts) if count < folds]
    if few:
        raise DataFormatError(
            f"{folds} folds need at least {folds} training examples of each class; "
            f"too few: {', '.join(few)}. Give fewer folds (--audit.folds) or more data"
        )


def relabel_batch(batch: dict, indices: list[int], new: dict[int, int]) -> dict:
    return {"label": [new.get(i, label) for i, label in zip(indices, batch["label"], strict=True)]}


def audited(train: datasets.Dataset, audit_run: str, action: str, digest: str) -> tuple[datasets.Dataset, int]:
    """The training split (as read: `digest`) with the audit's flagged examples dropped or relabelled; and how many."""
    issues, audited_digest = read_audit(audit_run, resolve_tracking_uri())
    if audited_digest != digest:
        raise DataFormatError(
            f"--data.audit_run {audit_run} audited other training examples (digest "
            f"{audited_digest[:12]}, these are {digest[:12]}): audit this data first"
        )
    flagged = issues["index"].to_numpy(dtype=np.int64)
    if action == "drop":
        return train.select(np.setdiff1d(np.arange(len(train)), flagged)), len(flagged)
    names = train.features["label"].names
    new = {int(i): names.index(name) for i, name in zip(flagged, issues["suggested"], strict=True)}
    return train.map(relabel_batch, batched=True, with_indices=True, fn_kwargs={"new": new}), len(new)
