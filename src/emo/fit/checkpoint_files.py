"""Checkpoint files, each read once per command: what emo checks in a checkpoint before anything loads (its run record,
its classes, the shapes of its weights), the model's settings LightningCLI takes from it, what Lightning restores a
fit or a test from, and the kept checkpoint at the end of a fit all come from one `torch.load` of the file.

The file is memory-mapped (`mmap=True`): reading a run record touches the pickle, not the weights, so looking
through every `last.ckpt` of a folder for the one to resume stays cheap. Lightning writes a checkpoint to a new file
and renames it over the old one, so a mapped file is never changed under a reader. A file written again since it
was read (another size or modification time) is read again: that is another file.
"""

import zipfile
from pathlib import Path

import torch
from lightning.fabric.plugins import CheckpointIO

from emo import UserError, first_line

LIGHTNING_PATHS = ("last", "best", "hpc")  # names Lightning resolves to a checkpoint itself (`--ckpt_path last`)


class CheckpointError(UserError):
    """A `--ckpt_path` that is not a checkpoint emo can load safely."""


def is_checkpoint_file(ckpt_path) -> bool:
    """A path given as `--ckpt_path`, not a name Lightning resolves or a registered model (`models:/...`)."""
    return bool(ckpt_path) and ckpt_path not in LIGHTNING_PATHS and not str(ckpt_path).startswith("models:/")


class CheckpointFiles:
    """The checkpoints one command reads, each read once (and `reads` counts the files read, for a test to see)."""

    def __init__(self):
        self.kept: dict[Path, tuple[tuple[int, int], dict]] = {}
        self.reads = 0

    def read(self, path) -> dict:
        """The checkpoint saved at `path` (weights only, on the CPU); one line naming the problem when it is none."""
        path = Path(path)
        if path.is_dir():
            raise CheckpointError(f"--ckpt_path {path}: a folder, not a checkpoint file")
        if not path.is_file():
            raise CheckpointError(f"--ckpt_path {path}: no such file")
        stat = path.stat()
        version, key = (stat.st_mtime_ns, stat.st_size), path.resolve()
        if key in self.kept and self.kept[key][0] == version:
            return self.kept[key][1]
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"--ckpt_path {path}: not a checkpoint (checkpoints are torch.save archives)")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:
            reason = first_line(error, limit=200)
            raise CheckpointError(
                f"--ckpt_path {path}: not a checkpoint that can be loaded safely ({reason})"
            ) from None
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CheckpointError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict)")
        self.reads += 1
        self.kept[key] = (version, checkpoint)
        return checkpoint

    def take(self, path) -> dict:
        """The checkpoint, no longer kept here: its reader holds the only reference (Lightning, restoring a fit)."""
        checkpoint = self.read(path)
        self.kept.pop(Path(path).resolve(), None)
        return checkpoint

    def label_names(self, path) -> list[str] | None:
        """The classes a checkpoint of emo's model was trained on."""
        names = self.read(path).get("hyper_parameters", {}).get("label_names")
        return list(names) if names else None


class CheckpointFilesIO(CheckpointIO):
    """Lightning's checkpoint IO, its reads served by a `CheckpointFiles` (set on the trainer's strategy)."""

    def __init__(self, inner: CheckpointIO, files: CheckpointFiles):
        self.inner, self.files = inner, files

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        if weights_only is False:  # asked for pickled code (`--weights_only false`): Lightning's own reader
            return self.inner.load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return self.files.take(path)

    def remove_checkpoint(self, path) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()
