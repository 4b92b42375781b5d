"""`python -m emo` in its own process, as a user starts it from a terminal; none outlives its test."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .data import ROOT


def as_in_a_terminal():
    # Ctrl-C as a user sends it: processes started in the background inherit SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


STARTED: list[subprocess.Popen] = []


def start_emo(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """`python -m emo ARGS` in its own process, writing to a file (a pipe nobody reads would stall it), gates importable."""
    paths = [str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(env or {})}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "emo", *args],
            cwd=log.parent,
            stdout=out,
            stderr=out,
            env=env,
            preexec_fn=as_in_a_terminal,
        )
    STARTED.append(process)
    return process


def run_emo(args: list[str], log: Path, env: dict | None = None, timeout: int = 600) -> tuple[int, str]:
    """Runs `python -m emo ARGS` to the end; returns its exit status and output."""
    process = start_emo(args, log, env)
    code = process.wait(timeout=timeout)
    return code, log.read_text()


def wait_for_output(log: Path, text: str, process: subprocess.Popen, timeout_s: float = 600) -> None:
    """Blocks until the process has written `text` (it, not the clock, says it is at the point of interest)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise AssertionError(
                f"the process exited with {process.returncode} before writing {text!r}:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.2)
    raise TimeoutError(f"{text!r} did not appear in {log} within {timeout_s} s")
