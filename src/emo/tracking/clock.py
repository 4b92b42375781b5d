"""`TrainingClock`: how long training took and how fast it went, validation left out, so samples/s compares
with other trainers. Read by the test report (`emo.tracking.evaluation_report`)."""

import time

from lightning.pytorch import Callback

from emo import STARTED
from emo.data import batch_size_of
from emo.spec import TRAIN_SECONDS, TRAIN_SPEED


class TrainingClock(Callback):
    """Training seconds, examples, tokens and padding of a fit; from the process start to its first step."""

    def __init__(self):
        self.train_seconds = 0.0
        self.train_examples = 0
        self.train_tokens = 0  # real tokens trained on (of this process)
        self.train_positions = 0  # tokens and padding
        self.fit_seconds = None
        self.seconds_to_first_step = None  # from the start of the process: imports, data, model
        self._fit_started = None
        self._clock_started = None
        self._in_train_epoch = False

    def _start_clock(self):
        if self._clock_started is None:
            self._clock_started = time.perf_counter()

    def _stop_clock(self):
        if self._clock_started is not None:
            self.train_seconds += time.perf_counter() - self._clock_started
            self._clock_started = None

    def on_fit_start(self, trainer, pl_module):
        self._fit_started = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seconds_to_first_step is None:
            self.seconds_to_first_step = time.monotonic() - STARTED

    def on_train_epoch_start(self, trainer, pl_module):
        self._in_train_epoch = True
        self._start_clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_examples += batch_size_of(batch) * trainer.world_size
        mask = batch["attention_mask"]
        self.train_tokens = self.train_tokens + mask.sum()  # a tensor on the device: no wait for it each step
        self.train_positions += mask.numel()

    def on_validation_start(self, trainer, pl_module):
        self._stop_clock()

    def on_validation_end(self, trainer, pl_module):
        if self._in_train_epoch:
            self._start_clock()

    def on_train_epoch_end(self, trainer, pl_module):
        self._in_train_epoch = False
        self._stop_clock()

    def on_fit_end(self, trainer, pl_module):
        self._stop_clock()
        self.fit_seconds = time.perf_counter() - self._fit_started
        if self.train_seconds > 0 and trainer.logger:
            throughput = {TRAIN_SPEED: self.train_examples / self.train_seconds, TRAIN_SECONDS: self.train_seconds}
            trainer.logger.log_metrics(throughput, step=trainer.global_step)

    def summary(self, world_size: int) -> dict:
        """The timing part of a run's summary.json."""
        return {
            "train_examples_seen": self.train_examples,
            "train_seconds": round(self.train_seconds, 1),
            "train_samples_per_sec": round(self.train_examples / self.train_seconds, 2) if self.train_seconds else None,
            "train_tokens": int(self.train_tokens) * world_size,
            "train_padding_share": round(1 - int(self.train_tokens) / self.train_positions, 4)
            if self.train_positions
            else None,
            "fit_wall_seconds": round(self.fit_seconds, 1) if self.fit_seconds else None,
            "seconds_to_first_step": round(self.seconds_to_first_step, 1) if self.seconds_to_first_step else None,
        }
