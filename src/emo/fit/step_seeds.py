"""`StepSeeds`: the random numbers a training step draws (dropout) come from a seed of the run's seed, the epoch and
the batch, set before every training batch, so a process that starts mid-epoch (a resumed fit) draws what the one
never stopped drew. Lightning does not keep the random generators' states in a checkpoint, and what other code draws
between two steps (a data loader's iterator, a validation) would shift them.
"""

import hashlib

import torch
from lightning.pytorch import Callback


def step_seed(seed: int, epoch: int, batch_idx: int) -> int:
    """The seed of the random numbers drawn by training batch `batch_idx` of `epoch` in a run seeded with `seed`."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{batch_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # torch takes seeds below 2**63


class StepSeeds(Callback):
    """Seeds torch before every training batch with `step_seed` of the run's seed (`seed_everything`'s)."""

    def __init__(self):
        self.seed: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.seed = torch.initial_seed()  # seed_everything's (the data loaders were built with it)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.manual_seed(step_seed(self.seed, trainer.current_epoch, batch_idx))
