"""A callback that holds a training run at a chosen step until the test lets it go.

Tests that interrupt or overlap processes use it so that the test, not the clock, decides
when a process is at the point of interest: the run writes `reached-<pid>-<step>` into the
gate's folder and waits there until the test creates `open` (or kills the process).
Subprocesses import it as `helpers.gates` with `tests/` on PYTHONPATH (see `gate_callback`).
"""

import json
import os
import time
from pathlib import Path

from lightning.pytorch import Callback


class Gate(Callback):
    """Waits at training step `at_step` of runs whose name ends with `run_suffix` (any run when empty).

    Each process waits once; a later process waits again unless `once_per_folder` and a
    process has already reached this gate. A stop signal opens the gate (emo then finishes the
    step under way, as a busy process would), unless `hold_on_stop`: then only a second Ctrl-C ends the wait.
    """

    def __init__(
        self,
        folder: str,
        at_step: int = 1,
        run_suffix: str = "",
        once_per_folder: bool = False,
        hold_on_stop: bool = False,
    ):
        self.folder = Path(folder)
        self.at_step = at_step
        self.run_suffix = run_suffix
        self.once_per_folder = once_per_folder
        self.hold_on_stop = hold_on_stop
        self.passed = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.passed or trainer.global_step != self.at_step:
            return
        run_name = getattr(trainer.logger, "_run_name", None) or ""
        if not run_name.endswith(self.run_suffix):
            return
        self.passed = True
        if self.once_per_folder and any(self.folder.glob("reached-*")):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"reached-{os.getpid()}-{trainer.global_step}").write_text(run_name)
        while not (self.folder / "open").exists() and (self.hold_on_stop or not stop_requested(trainer)):
            time.sleep(0.05)
            if self.hold_on_stop and stop_requested(trainer) and not (self.folder / "stop-seen").exists():
                (self.folder / "stop-seen").touch()  # the first Ctrl-C arrived: the test may send the second


def stop_requested(trainer) -> bool:
    """A stop signal arrived (emo finishes the training step under way, as a busy process would)."""
    return trainer.received_sigterm or any(getattr(callback, "stop_signal", None) for callback in trainer.callbacks)


def gate_callback(folder: Path, **settings) -> list[str]:
    """Command-line options that add a Gate to the trainer's callbacks."""
    callback = {"class_path": "helpers.gates.Gate", "init_args": {"folder": str(folder), **settings}}
    return ["--trainer.callbacks", json.dumps([callback])]


def wait_for_reached(folder: Path, processes: int, watch=(), timeout_s: float = 600) -> list[Path]:
    """Blocks until `processes` distinct processes wait at the gate; fails early if a watched process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reached = sorted(folder.glob("reached-*"))
        if len({path.name.split("-")[1] for path in reached}) >= processes:
            return reached
        for process in watch:
            if process.poll() is not None:
                raise AssertionError(f"process {process.pid} exited with {process.returncode} before reaching the gate")
        time.sleep(0.1)
    raise TimeoutError(f"{processes} processes did not reach the gate in {timeout_s} s")


def open_gate(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)  # a gate may be opened before any process reaches it
    (folder / "open").touch()
