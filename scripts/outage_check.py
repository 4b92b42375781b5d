"""A long tracking outage in the middle of a real fit: points lost, and training speed with and without the server.

    .venv/bin/python -m scripts.outage_check [--outage_s 300] [--train_size 9000] [--epochs 2]

Starts a real MLflow server, fine-tunes MiniLM offline (configs/offline.yaml) against it, kills
the server once training has run for `--cut_after_s`, restarts it on the same port and store
`--outage_s` later, and lets the fit finish. Then it reads the run back from the server and
prints: metric points expected and recorded, and the training steps per second before, during
and after the outage, from the timestamps of the run's own metric points.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
from tests.helpers.data import DATA_DIR, ROOT
from tests.helpers.server import MlflowServer


def train_points(journal: Path) -> list[tuple[int, int]]:
    """(step, ms) of the run's train/loss points, as training logged them."""
    import json

    entries = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    return [(e["step"], e["ts"]) for e in entries if e["op"] == "metrics" and "train/loss" in e["metrics"]]


def steps_per_second(points: list[tuple[int, int]], start_ms: float, end_ms: float) -> float:
    """Median rate between consecutive points inside the window (an interval with validation in it is left out)."""
    rates = [
        (s2 - s1) / ((t2 - t1) / 1000)
        for (s1, t1), (s2, t2) in zip(points, points[1:], strict=False)
        if start_ms <= t1 and t2 <= end_ms and t2 > t1
    ]
    if not rates:
        return float("nan")  # no training in that window
    typical = statistics.median(rates)
    return statistics.median([r for r in rates if r > typical / 3])  # validation pauses are a third of the rate or less


def run_with_outage(server: MlflowServer, folder: Path, options) -> None:
    """The fit, the outage in its middle, and what the server recorded."""
    args = ["fit", "--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/offline.yaml"),
            "--data.data_dir", str(DATA_DIR), "--data.train_size", str(options.train_size),
            "--trainer.max_epochs", str(options.epochs), "--trainer.log_every_n_steps", str(options.log_every),
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(folder / "outputs"),
            "--trainer.logger.init_args.experiment_name", "outage-check",
            "--trainer.logger.init_args.flush_timeout_s", str(options.outage_s + 120),
            "--registry.registered_model_name", "outage-check"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url}
    with open(folder / "fit.log", "w") as log:
        fit = subprocess.Popen([sys.executable, "-m", "emo", *args], cwd=ROOT, stdout=log, stderr=log, env=env)
    while not list((folder / "outputs").glob("*/*/journal.jsonl")) or not train_points(
        next((folder / "outputs").glob("*/*/journal.jsonl"))
    ):
        if fit.poll() is not None:
            raise SystemExit((folder / "fit.log").read_text()[-3000:])
        time.sleep(1)
    journal = next((folder / "outputs").glob("*/*/journal.jsonl"))
    time.sleep(options.cut_after_s)
    server.kill()
    cut_ms = time.time() * 1000
    print(f"server killed at step {train_points(journal)[-1][0]}", flush=True)
    time.sleep(options.outage_s)
    server.start()
    back_ms = time.time() * 1000
    print(f"server back at step {train_points(journal)[-1][0]}", flush=True)
    code = fit.wait()
    print((folder / "fit.log").read_text()[-1500:] if code else f"fit exited {code}")

    client = mlflow.MlflowClient(server.url)
    [run] = client.search_runs([client.get_experiment_by_name("outage-check").experiment_id])
    recorded = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    logged = sorted(step for step, _ in train_points(journal))
    points = train_points(journal)
    before = steps_per_second(points, 0, cut_ms)
    during = steps_per_second(points, cut_ms, back_ms)
    after = steps_per_second(points, back_ms, float("inf"))
    print(f"run {run.info.run_id}: status {run.info.status}")
    print(
        f"train/loss points logged by training {len(logged)}, recorded by the server {len(recorded)}, "
        f"lost {len(set(logged) - set(recorded))}, repeated {len(recorded) - len(set(recorded))}"
    )
    print(
        f"steps/s before the outage {before:.3f}, during {during:.3f} ({during / before - 1:+.1%}), after {after:.3f}"
    )
    versions = [v.version for v in client.search_model_versions("name='outage-check'")]
    print(f"registered versions: {versions}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage_s", type=float, default=300)
    parser.add_argument("--cut_after_s", type=float, default=40)
    parser.add_argument("--train_size", type=int, default=16000, help="examples (16000: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--log_every", type=int, default=10)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "server").mkdir()
        server = MlflowServer(folder / "server").start()
        try:
            run_with_outage(server, folder, options)
        finally:
            server.kill()


if __name__ == "__main__":
    main()
