"""The champion served three ways by `mlflow models serve`, measured over HTTP side by side in one run: the
transformers flavor (a `pipeline` in fp32) against its ONNX exports (fp32, int8) from `emo export`; and
`emo predict` on the 16,000 training texts, torch against ONNX.

    export MLFLOW_TRACKING_URI=sqlite:////tmp/serve/mlflow.db
    python -m emo export --model models:/minilm-emotion-classifier@champion --quantize none     # NAME-onnx/1
    python -m emo export --model models:/minilm-emotion-classifier@champion                    # NAME-onnx/2
    python scripts/serve_benchmark.py --source models:/minilm-emotion-classifier@champion \\
        --fp32 models:/minilm-emotion-classifier-onnx/1 --int8 models:/minilm-emotion-classifier-onnx/2

Each served model in turn, alone on the machine: the server is started and waited for (`/ping`), warmed up, then
4 clients on 127.0.0.1 send single texts (a bounded number each: texts/s, p50/p95 latency of a request), then the
whole test split in batches of 32 (texts/s, accuracy); the memory is the RSS of the server's processes (mlflow
and the uvicorn it starts) after the load. Writes reports/benchmarks/serve.md (the table) and serve.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from emo_lab.data import ROOT
from emo_lab.server import free_port, served_model

CLIENTS = 4
BATCH = 32


def post(url: str, texts: list[str]) -> list[dict]:
    request = urllib.request.Request(
        url, data=json.dumps({"inputs": texts}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())["predictions"]


def load(url: str, jobs: list[list[str]]) -> tuple[float, list[float], list[list[dict]]]:
    """`jobs` (each a request's texts) shared by CLIENTS threads; returns the wall time, each request's latency and
    the answers in the jobs' order."""
    answers: list = [None] * len(jobs)
    latencies: list[float] = []
    next_job = iter(range(len(jobs)))
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                i = next(next_job, None)
            if i is None:
                return
            start = time.perf_counter()
            answers[i] = post(url, jobs[i])
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies, answers


def tree_rss(pid: int) -> float:
    """GiB resident in the process and its children."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**30


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def serve(uri: str, texts: list[str], labels: list[str], singles: int, folder: Path) -> dict:
    started = time.perf_counter()
    with served_model(uri, folder / f"serve-{free_port()}.log", timeout_s=600) as (url, server):
        ready_s = time.perf_counter() - started
        invocations = f"{url}/invocations"
        load(invocations, [[text] for text in texts[:8]])  # warm-up
        single_s, latencies, _ = load(invocations, [[text] for text in texts[:singles]])
        jobs = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
        batch_s, _, answers = load(invocations, jobs)
        memory = tree_rss(server.pid)
        load_average = os.getloadavg()[0]  # the machine is shared: how busy it was during this model's turn
    predicted = [row["label"] for answer in answers for row in answer]
    return {
        "uri": uri,
        "ready_s": ready_s,
        "single_texts_per_s": singles / single_s,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "batch_texts_per_s": len(texts) / batch_s,
        "accuracy": sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels),
        "memory_gib": memory,
        "load_average_1min": load_average,
    }


def predict_wall(uri: str, texts_file: Path, folder: Path, env: dict) -> float:
    """Seconds for `python -m emo predict` on `texts_file`, start-up included."""
    output = folder / f"predictions-{time.monotonic_ns()}.csv"
    command = [sys.executable, "-m", "emo", "predict", "--config", str(ROOT / "configs/base.yaml"), "--config",
               str(ROOT / "configs/offline.yaml"), "--ckpt_path", uri, "--data.predict_file", str(texts_file),
               "--prediction.output_file", str(output), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}:\n{done.stderr[-3000:]}")
    return wall


def split(data_dir: Path, name: str) -> tuple[list[str], list[str]]:
    rows = [line.rsplit(";", 1) for line in (data_dir / f"{name}.txt").read_text().splitlines() if line.strip()]
    return [text for text, _ in rows], [label for _, label in rows]


def table(results: dict, predict: dict) -> str:
    base = results["transformers"]
    lines = [
        "| served by `mlflow models serve` | texts/s, single texts, 4 clients | p50 / p95 ms | texts/s, batches of 32 "
        "| memory GiB | test accuracy (over HTTP) | ready after s | load average |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['single_texts_per_s']:.1f} ({r['single_texts_per_s'] / base['single_texts_per_s']:.2f}x) "
            f"| {r['p50_ms']:.0f} / {r['p95_ms']:.0f} | {r['batch_texts_per_s']:.1f} ({r['batch_texts_per_s'] / base['batch_texts_per_s']:.2f}x) "
            f"| {r['memory_gib']:.2f} ({r['memory_gib'] / base['memory_gib']:.2f}x) | {100 * r['accuracy']:.2f} % | {r['ready_s']:.0f} "
            f"| {r['load_average_1min']:.1f} |"
        )
    lines += ["", "| `emo predict`, 16,000 texts, wall incl. start-up | s | texts/s |", "|---|---|---|"]
    lines += [f"| {name} | {s:.1f} | {16000 / s:.0f} |" for name, s in predict.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="the registered transformers model, models:/NAME@ALIAS")
    parser.add_argument("--fp32", required=True, help="its fp32 ONNX export, models:/NAME-onnx/VERSION")
    parser.add_argument("--int8", required=True, help="its int8 ONNX export, models:/NAME-onnx/VERSION")
    parser.add_argument("--data_dir", default=str(ROOT / "data/emotion"))
    parser.add_argument("--singles", type=int, default=400, help="single-text requests, shared by the 4 clients")
    parser.add_argument("--output_dir", default=str(ROOT / "reports/benchmarks"))
    args = parser.parse_args()
    data_dir, output_dir = Path(args.data_dir), Path(args.output_dir)
    texts, labels = split(data_dir, "test")
    with tempfile.TemporaryDirectory(prefix="serve-benchmark-") as folder:
        folder = Path(folder)
        results = {}
        for name, uri in (("transformers", args.source), ("onnx-fp32", args.fp32), ("onnx-int8", args.int8)):
            results[name] = serve(uri, texts, labels, args.singles, folder)
            print(name, json.dumps(results[name]), flush=True)
        train_file = folder / "train-texts.txt"
        train_file.write_text("\n".join(split(data_dir, "train")[0]) + "\n")
        predict = {
            f"torch ({args.source})": predict_wall(args.source, train_file, folder, dict(os.environ)),
            f"ONNX int8 ({args.int8})": predict_wall(args.int8, train_file, folder, dict(os.environ)),
        }
        print(json.dumps(predict), flush=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = table(results, predict)
    (output_dir / "serve.md").write_text(report)
    (output_dir / "serve.json").write_text(json.dumps({"serve": results, "predict_s": predict}, indent=1) + "\n")
    print(report)


if __name__ == "__main__":
    main()
