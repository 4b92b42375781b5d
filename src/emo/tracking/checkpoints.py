"""`LastCheckpoint`: `<run folder>/checkpoints/last.ckpt` kept current, for `--ckpt_path last` after a crash or a stop.

Written every `every_n_train_steps` steps, at every epoch end, and when the process is asked to
stop (Ctrl-C, SIGTERM); Lightning's SLURM auto-requeue writes its own `hpc_ckpt_<n>.ckpt` and comes
back to it. How a resume continues the same MLflow run is `emo.tracking.resume`.

A resumed fit ends as the same fit never stopped would (same seed, same machine): Lightning restores
the weights, the optimizer, the schedule and the loops' progress, the sampler the epoch's order and
position (`emo.data.sampler`), and the random numbers a training step draws (dropout) come from a
seed of the run's seed, the epoch and the batch (`step_seed`), set before every training batch; a
process that starts mid-epoch draws what the one never stopped drew. (Lightning does not keep the
random generators' states in a checkpoint; and what other code draws between two steps, a data
loader's iterator or a validation, would shift them.)
"""

import hashlib
import signal
import sys
import threading

import torch
from jsonargparse.typing import NonNegativeInt
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


def step_seed(seed: int, epoch: int, batch_idx: int) -> int:
    """The seed of the random numbers drawn by training batch `batch_idx` of `epoch` in a run seeded with `seed`."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{batch_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # torch takes seeds below 2**63


class LastCheckpoint(ModelCheckpoint):
    """Keeps `last.ckpt` current, for `--ckpt_path last` after a crash or a stop.

    Written every `every_n_train_steps` steps, at every epoch end, and when the process is asked
    to stop: Ctrl-C or SIGTERM finish the training step under way, write `last.ckpt` and end the
    run as KILLED (a second Ctrl-C stops at once, keeping the checkpoint before it). A step's end
    is the point Lightning resumes from exactly: no metric step is skipped or repeated.

    Args:
        every_n_train_steps: Also write it every this many training steps (0: only at epoch ends and on stop).
    """

    def __init__(self, every_n_train_steps: NonNegativeInt = 200):
        super().__init__(save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps)
        self.stop_signal: int | None = None
        self.saved_for_stop = False
        self.previous_sigint = None
        self.seed: int | None = None  # the run's seed, read as training starts (see step_seed)

    def save_now(self, trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self.stop_signal, self.saved_for_stop = None, False
        self.seed = torch.initial_seed()  # seed_everything's (the data loaders were built with it)
        if threading.current_thread() is threading.main_thread():
            self.previous_sigint = signal.signal(signal.SIGINT, self.ctrl_c)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self.restore_sigint()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.restore_sigint()

    def restore_sigint(self) -> None:
        if self.previous_sigint is not None:
            signal.signal(signal.SIGINT, self.previous_sigint)
            self.previous_sigint = None

    def ctrl_c(self, signum, frame) -> None:
        if self.stop_signal is not None:
            raise KeyboardInterrupt  # asked twice: now
        self.stop_signal = signal.SIGINT
        print("\nemo: stopping after this training step (Ctrl-C again stops at once)", file=sys.stderr)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.stop_signal is not None or trainer.received_sigterm:
            self.save_now(trainer)
            self.saved_for_stop = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # The stop comes here, after Lightning has logged the metrics of the step the checkpoint holds.
        if self.saved_for_stop:
            raise KeyboardInterrupt if self.stop_signal == signal.SIGINT else SIGTERMException()
        if self.seed is not None:  # the same random numbers for this batch whether the process started here or not
            torch.manual_seed(step_seed(self.seed, trainer.current_epoch, batch_idx))

    def on_validation_end(self, trainer, pl_module) -> None:
        self.save_now(trainer)  # at every epoch end, improved or not

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.save_now(trainer)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """A checkpoint written inside a step, before the step was done (Lightning's SLURM handler writes one when
        SIGUSR1 comes), counts the steps already taken; on restart Lightning adds one more, as it must for one written
        at a step's end, and every later metric would be logged one step late. Taken back here: no step is skipped."""
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        progress = loop.get("epoch_loop.batch_progress", {}).get("current", {})
        state = loop.get("epoch_loop.state_dict", {})
        inside_a_step = progress and progress["ready"] > progress["completed"] == progress["processed"]
        if inside_a_step and "_batches_that_stepped" in state:
            state["_batches_that_stepped"] -= 1

    def on_exception(self, trainer, pl_module, exception) -> None:
        # Lightning's own SIGTERM stop (at an epoch's end, or during validation) keeps its progress too.
        if isinstance(exception, SIGTERMException) and not trainer.sanity_checking:
            self.save_now(trainer)
