"""`emo data`: the emotion data in the project's `data/emotion/`, wherever the project is cloned.

A link to `../shared/data/emotion` when that folder exists (this lab's machines); otherwise a one-time
download of `dair-ai/emotion` (configuration `split`) from the Hugging Face Hub, written as the
authors' `text;label` files beside the Hub's `dataset_info.json` (its classes in the Hub's id order,
which emo reads: `emo.data.labels`). Either way the copy is checked: 16,000 / 2,000 / 2,000 examples,
the digest of the examples that emo logs as `emo.data_digest`, and the class names in the Hub's order;
a copy that differs is one warning line that says how. Neither possible: one line that says what to do.

    python -m emo data [--target data/emotion] [--shared ../shared/data/emotion]
"""

import hashlib
import os
import sys
from pathlib import Path

import datasets
from jsonargparse import auto_cli

from emo import UserError, first_line, hub
from emo.arguments import OneLineParser
from emo.data.labels import DATASET_INFO, info_names
from emo.data.splits import content_digest, load_hub_splits, load_local_splits
from emo.spec import SPLITS

HUB_DATASET, HUB_CONFIG = "dair-ai/emotion", "split"
CARER_LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")  # in the Hub's id order (its dataset_info.json)
EXPECTED_SIZES = {"train": 16000, "validation": 2000, "test": 2000}
# emo.data_digest of the examples (in file order) of the CARER `split` files, as on the Hub and in ../shared.
EXPECTED_DIGEST = "2fcba6f138f7bad8a41b9281aca7023c91228ddf5c9048b48108e3dfc7a78bf7"
FILE_NAMES = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}


def data_digest(splits: dict[str, datasets.Dataset]) -> str:
    """One digest of all the examples: of each split's (emo.data.splits.content_digest), in split order."""
    return hashlib.sha256("".join(content_digest(splits[split]) for split in SPLITS).encode()).hexdigest()


def write_splits(splits: dict[str, datasets.Dataset], folder: Path) -> None:
    """Writes the splits as the authors' files: `<text>;<label name>` a line, train.txt, val.txt, test.txt; first,
    the training split's `DatasetInfo` as `dataset_info.json` (`datasets`' format: the classes in id order)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = splits["train"].info.copy()
    info.features = splits["train"].features  # the classes as the splits number them
    info.write_to_directory(str(folder), pretty_print=True)  # before train.txt, whose presence means "fetched"
    for split, name in FILE_NAMES.items():
        names = splits[split].features["label"].names
        lines = [
            f"{text};{names[label]}\n"
            for text, label in zip(splits[split]["text"], splits[split]["label"], strict=True)
        ]
        temporary = folder / f".{name}.tmp"
        temporary.write_text("".join(lines), encoding="utf-8")
        os.replace(temporary, folder / name)  # a split file is whole or absent


def carer_info() -> datasets.DatasetInfo:
    """CARER's `DatasetInfo` as the Hub gives its features: for a copy fetched before emo wrote one."""
    features = {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(CARER_LABELS))}
    return datasets.DatasetInfo(
        description=f"{HUB_DATASET} (config {HUB_CONFIG})", features=datasets.Features(features)
    )


def examples_difference(folder: Path) -> str | None:
    """How the examples in `folder` differ from the expected data (sizes, then examples); None when they do not."""
    splits = load_local_splits(str(folder), list(CARER_LABELS))
    sizes = {split: len(examples) for split, examples in splits.items()}
    if sizes != EXPECTED_SIZES:
        found = ", ".join(f"{split} {sizes[split]}" for split in SPLITS)
        return f"{found} examples where the CARER split has {', '.join(f'{s} {n}' for s, n in EXPECTED_SIZES.items())}"
    digest = data_digest(splits)
    if digest != EXPECTED_DIGEST:
        return f"the same sizes but other examples (digest {digest[:12]}, expected {EXPECTED_DIGEST[:12]})"
    return None


def difference(folder: Path) -> str | None:
    """How the copy in `folder` differs from the expected data (sizes, examples, then the names of the classes in its
    dataset_info.json); None when it does not."""
    problem = examples_difference(folder)
    if problem:
        return problem
    names = info_names(str(folder))
    if names != list(CARER_LABELS):
        found = f"its {DATASET_INFO} names the classes {names}" if names else f"it has no {DATASET_INFO}"
        return f"{found}: a fit would number them otherwise than the Hub ({', '.join(CARER_LABELS)})"
    return None


def fetch(target: Path, shared: Path) -> str:
    """Fills `target` (a link to `shared`, else the Hub's copy) unless it is there; returns where the data came from."""
    if (target / "train.txt").exists():
        source = f"{target} (already there)"
        if not (target / DATASET_INFO).exists() and not target.is_symlink() and examples_difference(target) is None:
            carer_info().write_to_directory(str(target), pretty_print=True)  # a copy an earlier emo fetched
            source = f"{target} (already there; {DATASET_INFO} added: the Hub's class order)"
    elif (shared / "train.txt").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        target.symlink_to(os.path.relpath(shared.resolve(), target.parent.resolve()))
        source = f"{target} -> {shared}"
    else:
        try:
            hub.require(HUB_DATASET, "dataset")
            splits = load_hub_splits(HUB_DATASET, HUB_CONFIG)
        except Exception as error:  # unreachable, offline without a cached copy, or refused: say what to do instead
            why = "cannot be reached" if isinstance(error, hub.HubUnreachableError) else f"failed ({first_line(error)})"
            raise UserError(
                f"no emotion data: {shared} is not there and the download of {HUB_DATASET} from the Hugging "
                f"Face Hub {why}; put train/val/test files (text;label a line) in a folder and give it with "
                "--data.data_dir PATH"
            ) from None
        write_splits(splits, target)
        source = f"{target}, downloaded from {HUB_DATASET} ({HUB_CONFIG})"
    problem = difference(target)
    if problem:
        print(f"emo: warning: {target} differs from the CARER data emo was measured on: {problem}", file=sys.stderr)
    return source


def data(target: str = "data/emotion", shared: str = "../shared/data/emotion") -> None:
    """Put the emotion data in the project: a link to a local copy, else a download from the Hub, checked.

    Args:
        target: Where the configs read the data (configs/offline.yaml: data/emotion).
        shared: A copy on this machine to link to, when it exists.
    """
    print(f"emo: the emotion data is in {fetch(Path(target), Path(shared))}")


def main(args: list[str]) -> None:
    auto_cli(data, args=args, parser_class=OneLineParser)
