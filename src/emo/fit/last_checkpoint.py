"""`LastCheckpoint`: `<run folder>/checkpoints/last.ckpt` kept current, for `--ckpt_path last` after a crash or a stop.

Written every `every_n_train_steps` steps, at every epoch end, and when the process is asked to
stop (Ctrl-C, SIGTERM); Lightning's SLURM auto-requeue writes its own `hpc_ckpt_<n>.ckpt` and comes
back to it. How a resume continues the same MLflow run is `emo.tracking.resume`.

A resumed fit ends as the same fit never stopped would (same seed, same machine): Lightning restores
the weights, the optimizer, the schedule and the loops' progress, the sampler the epoch's order and
position (`emo.data.sampler`), and the random numbers of each training step come from the step alone
(`emo.fit.step_seeds`).
"""

import signal
import sys
import threading

from jsonargparse.typing import NonNegativeInt
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


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

    def save_now(self, trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self.stop_signal, self.saved_for_stop = None, False
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
