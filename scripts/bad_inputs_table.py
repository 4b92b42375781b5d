"""Runs every bad input of tests/helpers/bad_inputs.py as a real `python -m emo` process and prints a Markdown table.

    .venv/bin/python -m scripts.bad_inputs_table [--only SUBSTRING] > reports/bad_inputs.md

Each case gets a fresh scratch folder, the tiny test model, a few hundred real examples and a
real MLflow server on 127.0.0.1; the table gives the exit status (and the one expected), the runs the
case left, the seconds from start to exit
(Python start-up and imports included) and the last line printed. Everything the process printed is read (stdout and
stderr): a case that printed more than its one line, but for the case that trains, is flagged as unexpected.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
from tests.helpers.bad_inputs import CASES, Context
from tests.helpers.data import write_small_data, write_tiny_model
from tests.helpers.server import MlflowServer


def run_case(case, scratch: Path, model: Path, data: Path, server: MlflowServer) -> tuple[int, float, list[str], int]:
    """Exit status, seconds, the lines printed, and how many runs the case left in its experiment."""
    ctx = Context(scratch, model, data, server.url, name=f"table-{case.name.replace(' ', '-')}")
    args, env = case.build(ctx)
    environment = {**__import__("os").environ, "MLFLOW_TRACKING_URI": server.url, **env}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "emo", *args], cwd=scratch, capture_output=True, text=True, env=environment
    )
    seconds = time.monotonic() - started
    lines = [line for line in (done.stdout + "\n" + done.stderr).splitlines() if line.strip()]
    client = mlflow.MlflowClient(server.url)
    experiment = client.get_experiment_by_name(ctx.name)
    runs = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    return done.returncode, seconds, lines, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    only = parser.parse_args().only
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model, data = write_tiny_model(folder / "tiny"), write_small_data(folder / "data")
        (folder / "server").mkdir()
        server = MlflowServer(folder / "server").start()
        try:
            print("| case | exit (expected) | runs | seconds | what emo printed (last line) |\n|---|---|---|---|---|")
            for number, case in enumerate(c for c in CASES if only in c.name):
                scratch = folder / f"case-{number}"
                scratch.mkdir()
                code, seconds, lines, runs = run_case(case, scratch, model, data, server)
                line = lines[-1] if lines else ""
                shown = line.replace(str(scratch), "…").replace("|", "\\|")
                as_promised = (
                    code == case.status
                    and case.expected in line
                    and line.startswith("emo: error:")
                    and runs == case.runs_left
                    and (len(lines) == 1 or case.runs_left)
                )
                flag = "" if as_promised else " **(unexpected)**"
                print(
                    f"| {case.name} | {code} ({case.status}) | {runs} | {seconds:.1f} | `{shown}`{flag} |", flush=True
                )
        finally:
            server.kill()


if __name__ == "__main__":
    main()
