"""A quiet start: emo prints progress, results and problems, not what libraries say about choices made on purpose.

Each line below silences one message that every run printed although nothing was wrong.
Real problems still show: only these messages are filtered, by their text.
"""

import logging
import warnings
from contextlib import contextmanager

EXPECTED_WARNINGS = [
    # emo hands LightningCLI the command line itself (and each sweep trial its own)
    r"LightningCLI's args parameter is intended",
    # inside datasets' sort, between pyarrow versions
    r"Specifying null_placement in SortOptions is deprecated",
    # MLflow's schema hint for the integer label column of the logged datasets
    r"Hint: Inferred schema contains integer column",
    # Lightning's own use of torch's pytree API
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # bf16 autocast, emo's default where the machine runs it fast: the summary counts 32-bit sizes
    r"Precision bf16-mixed is not supported by the model summary",
    # DataLoader workers compete with the model for a laptop's few cores: num_workers stays a choice
    r".*does not have many workers",
]


class DropMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_libraries() -> None:
    if getattr(quiet_libraries, "done", False):
        return
    quiet_libraries.done = True
    for message in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message)
    # Adverts for other loggers and model stores; how Lightning counts the steps of the learning-rate schedule.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        DropMessages("💡 Tip", "Loading `train_dataloader`")
    )
    # MLflow's system-metrics sampler says when it starts and stops, and a new sqlite store that it creates its tables.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    # "Experiment ... not found. Creating it.": a new experiment is created on purpose.
    logging.getLogger("lightning.pytorch.loggers.mlflow").setLevel(logging.ERROR)
    # No model card or licence for local folders; the signature is inferred on purpose.
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)

    import transformers

    transformers.utils.logging.disable_progress_bar()  # a bar per weight file loaded or saved, gone in a blink


@contextmanager
def logger_at(name: str, level: int = logging.WARNING):
    """The logger `name` at `level` for the calls inside (a message said later instead, or not at all)."""
    log = logging.getLogger(name)
    previous = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(previous)


@contextmanager
def no_data_bars():
    """datasets' progress bars off for the calls inside (inputs being checked: a bad input's one line is all)."""
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


class HeldMessages(logging.Filter):
    """A logger's records kept instead of printed (`with held:`), until `release()` prints them, in order: what a
    run says about itself waits until its settings are known to be good, so a bad one prints its one line alone."""

    def __init__(self, name: str):
        super().__init__()
        self.logger = logging.getLogger(name)
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False

    def __enter__(self) -> "HeldMessages":
        self.logger.addFilter(self)
        return self

    def __exit__(self, *exception) -> None:
        self.logger.removeFilter(self)

    def release(self) -> None:
        records, self.records = self.records, []
        for record in records:
            self.logger.handle(record)
