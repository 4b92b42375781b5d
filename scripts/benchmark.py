"""emo beside the best a Hugging Face `Trainer` user can do, measured side by side in one run.

    .venv/bin/python -m scripts.benchmark                      # everything, about 25 min on 2 cores
    .venv/bin/python -m scripts.benchmark --only training --rounds 3 --steps 200

Sections (each variant runs in its own process; training variants alternate over rounds and the
median is reported):
- training: the Trainer peer (`scripts/trainer_peer.py`, length-grouped) in fp32 and with
  `bf16=True`, against emo's offline default, with and without MLflow tracking (a real server on
  127.0.0.1). Samples/s, tokens/s, padding share, peak RSS; ratio to the faster Trainer.
- time_to_92: the Trainer's quickest route to 92 % test accuracy (length-grouped, bf16, lr 1e-4,
  one epoch) against `configs/fast.yaml`: training seconds and test accuracy of each.
- predict: the 16,000 training texts labelled by a `transformers.pipeline` script (batch 64)
  and by `emo predict`, both with the model trained in time_to_92; wall-clock from the command
  to the written output, start-up included.

Writes `reports/benchmarks/benchmark.{md,json,png}` and logs them as a run of the `benchmarks`
MLflow experiment (MLFLOW_TRACKING_URI, else the local `sqlite:///mlflow.db`).
The machine is noisy: compare ratios from one run, not numbers across runs.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers.data import DATA_DIR, ROOT
from tests.helpers.server import MlflowServer

MODEL_DIR = ROOT / "models/all-MiniLM-L6-v2"
OFFLINE = ["--config", "configs/base.yaml", "--config", "configs/offline.yaml"]
PIPELINE_SCRIPT = """
import csv, sys, time
from transformers import pipeline
model_dir, texts_file, output = sys.argv[1:4]
texts = [line.strip() for line in open(texts_file, encoding="utf-8") if line.strip()]
classify = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device="cpu", top_k=None)
with open(output, "w", newline="") as out:
    writer = csv.writer(out)
    for text, scores in zip(texts, classify(texts, batch_size=64, truncation=True, max_length=128)):
        best = max(scores, key=lambda s: s["score"])
        writer.writerow([text, best["label"], *(f"{s['score']:.5f}" for s in scores)])
"""


def run(command: list[str], env: dict | None = None) -> tuple[str, float, float]:
    """stdout, wall seconds and peak RSS (MiB) of a command that must succeed."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=stdout, stderr=stderr, text=True, cwd=ROOT, env={**os.environ, **(env or {})}
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource use
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode:
            sys.exit(f"failed ({process.returncode}): {' '.join(command)}\n{stderr.read()[-3000:]}")
        return stdout.read(), wall, usage.ru_maxrss / 1024  # Linux reports KiB


def trainer_peer(data: Path, *options: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "scripts/trainer_peer.py", "--model", str(MODEL_DIR), "--data", str(data),
                   "--output-dir", out, "--group-by-length", *options]  # fmt: skip
        stdout, wall, peak = run(command)
    return json.loads(stdout.strip().splitlines()[-1]) | {"wall_seconds": round(wall, 1), "peak_rss_mib": round(peak)}


def emo_fit(data: Path, out: Path, tracking_uri: str | None, *options: str) -> dict:
    """A real `python -m emo fit`; its numbers come from the summary.json it writes."""
    logger = [] if tracking_uri else ["--trainer.logger", "false"]
    command = [
        sys.executable,
        "-m",
        "emo",
        "fit",
        *OFFLINE,
        "--data.data_dir",
        str(data),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        *logger,
        *options,
    ]
    _, wall, peak = run(command, env={"MLFLOW_TRACKING_URI": tracking_uri or ""})
    summary = json.loads(max(out.rglob("summary.json"), key=lambda p: p.stat().st_mtime).read_text())
    seconds = summary["train_seconds"]
    return {
        "samples_per_sec": summary["train_samples_per_sec"],
        "tokens_per_sec": round(summary["train_tokens"] / seconds, 1) if summary.get("train_tokens") else None,
        "padding_share": summary.get("train_padding_share"),
        "train_seconds": seconds,
        "test_acc": summary["test"].get("test/acc"),
        "test_f1_macro": summary["test"].get("test/f1_macro"),
        "peak_rss_mib": round(peak),
        "wall_seconds": round(wall, 1),
        "seconds_to_first_step": summary.get("seconds_to_first_step"),
        "best_checkpoint": summary.get("best_checkpoint"),
        "model_folder": next((str(p.parent) for p in out.rglob("model/config.json")), None),
    }


def training(data: Path, steps: int, rounds: int, server: MlflowServer, work: Path) -> dict:
    short = ["--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1", "--trainer.num_sanity_val_steps", "0",
             "--registry.log_model", "false", "--trainer.logger.init_args.log_model", "false"]  # fmt: skip
    variants = {
        "Trainer, grouped, fp32": lambda: trainer_peer(data, "--max-steps", str(steps), "--lr", "1e-4"),
        "Trainer, grouped, bf16": lambda: trainer_peer(data, "--max-steps", str(steps), "--lr", "1e-4", "--bf16"),
        "emo default": lambda: emo_fit(data, work / f"emo-{time.time_ns()}", server.url, "--trainer.max_steps", str(steps), *short),
        "emo default, no tracking": lambda: emo_fit(data, work / f"emo-{time.time_ns()}", None, "--trainer.max_steps", str(steps),
                                                    *short[:6]),
    }  # fmt: skip
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for round_ in range(rounds):
        for name, measure in variants.items():
            results[name].append(measure())
            print(f"round {round_ + 1}: {name:26s} {results[name][-1]['samples_per_sec']:7.1f} samples/s", flush=True)
    medians = {name: median_of(runs) for name, runs in results.items()}
    for values in medians.values():  # a test of one batch says nothing: these runs measure speed
        values.pop("test_acc", None), values.pop("test_f1_macro", None)
    return medians


def median_of(runs: list[dict]) -> dict:
    numbers = {k for run in runs for k, v in run.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {k: statistics.median(run[k] for run in runs if run.get(k) is not None) for k in numbers} | {
        "runs": len(runs)
    }


def time_to_92(data: Path, server: MlflowServer, work: Path) -> dict:
    trainer = trainer_peer(data, "--epochs", "1", "--lr", "1e-4", "--bf16", "--evaluate")
    print(f"Trainer, quickest route: {trainer['train_seconds']} s, test acc {trainer['test_acc']}", flush=True)
    emo = emo_fit(data, work / "fast", server.url, "--config", "configs/fast.yaml")
    print(f"emo fast.yaml: {emo['train_seconds']} s, test acc {emo['test_acc']}", flush=True)
    return {"Trainer, grouped, bf16, lr 1e-4, 1 epoch": trainer, "emo, configs/fast.yaml": emo}


def predict(data: Path, fitted: dict, work: Path) -> dict:
    texts = work / "texts.txt"
    texts.write_text(
        "\n".join(line.rsplit(";", 1)[0] for line in (data / "train.txt").read_text().splitlines() if line) + "\n"
    )
    n = len(texts.read_text().splitlines())
    _, pipeline_wall, pipeline_peak = run(
        [sys.executable, "-c", PIPELINE_SCRIPT, fitted["model_folder"], str(texts), str(work / "pipeline.csv")]
    )
    print(f"pipeline: {n} texts in {pipeline_wall:.1f} s", flush=True)
    command = [
        sys.executable,
        "-m",
        "emo",
        "predict",
        *OFFLINE,
        "--ckpt_path",
        fitted["best_checkpoint"],
        "--data.predict_file",
        str(texts),
        "--prediction.output_file",
        str(work / "emo.csv"),
    ]
    _, emo_wall, emo_peak = run(command)
    print(f"emo predict: {n} texts in {emo_wall:.1f} s", flush=True)
    return {
        "transformers.pipeline, batch 64": {"wall_seconds": round(pipeline_wall, 1), "texts_per_sec": round(n / pipeline_wall, 1), "peak_rss_mib": round(pipeline_peak)},
        "emo predict": {"wall_seconds": round(emo_wall, 1), "texts_per_sec": round(n / emo_wall, 1), "peak_rss_mib": round(emo_peak)},
    }  # fmt: skip


def ratios(results: dict) -> dict:
    found = {}
    if "training" in results:
        t = results["training"]
        best_trainer = max(
            t["Trainer, grouped, fp32"]["samples_per_sec"], t["Trainer, grouped, bf16"]["samples_per_sec"]
        )
        found["training: emo / best Trainer (samples/s, >= 1.3)"] = t["emo default"]["samples_per_sec"] / best_trainer
        no_tracking = t["emo default, no tracking"]["samples_per_sec"]
        found["tracking overhead (%, <= 3)"] = 100 * (1 - t["emo default"]["samples_per_sec"] / no_tracking)
    if "time_to_92" in results:
        trainer, emo = results["time_to_92"].values()
        found["time to 92 %: emo fast / Trainer (training s, <= 0.6)"] = emo["train_seconds"] / trainer["train_seconds"]
    if "predict" in results:
        pipeline, emo = results["predict"].values()
        found["predict 16,000 texts: emo / pipeline (wall s, <= 0.5)"] = emo["wall_seconds"] / pipeline["wall_seconds"]
    return {name: round(value, 3) for name, value in found.items()}


def markdown(results: dict, found: dict, options) -> str:
    lines = [
        f"# emo benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {MODEL_DIR.name}, batch 16, max length 128; "
        f"{options.rounds} rounds of {options.steps} steps (median).",
        "",
        "| ratio | value |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value} |" for name, value in found.items()]
    columns = [
        "samples_per_sec",
        "tokens_per_sec",
        "padding_share",
        "train_seconds",
        "test_acc",
        "test_f1_macro",
        "seconds_to_first_step",
        "wall_seconds",
        "texts_per_sec",
        "peak_rss_mib",
    ]
    for section, variants in results.items():
        shown = [c for c in columns if any(v.get(c) is not None for v in variants.values())]
        lines += ["", f"## {section}", "", "| variant | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
        lines += [
            f"| {name} | " + " | ".join(str(round(v[c], 4)) if v.get(c) is not None else "" for c in shown) + " |"
            for name, v in variants.items()
        ]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    metric = {"training": "samples_per_sec", "time_to_92": "train_seconds", "predict": "wall_seconds"}
    for ax, (section, variants) in zip(axes[0], results.items(), strict=True):
        names = list(variants)
        ax.barh(names, [variants[n][metric[section]] for n in names], color="tab:blue")
        ax.set_title(f"{section}: {metric[section]}")
    figure.tight_layout()
    figure.savefig(path)


def log_to_mlflow(found: dict, folder: Path, options) -> None:
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}")
    mlflow.set_experiment("benchmarks")
    with mlflow.start_run(run_name=f"benchmark-{time.strftime('%Y%m%d-%H%M')}"):
        mlflow.log_params(
            {
                "steps": options.steps,
                "rounds": options.rounds,
                "cores": os.cpu_count(),
                "sections": ",".join(options.only),
            }
        )
        mlflow.log_metrics(
            {
                name.split(" (")[0].replace(":", "").replace("%", "pct").replace(",", ""): value
                for name, value in found.items()
            }
        )
        mlflow.log_artifacts(str(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["training", "time_to_92", "predict"],
        default=["training", "time_to_92", "predict"],
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks")
    options = parser.parse_args()
    if "predict" in options.only and "time_to_92" not in options.only:
        parser.error("predict uses the model trained in time_to_92: add it to --only")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "server").mkdir()
        server = MlflowServer(work / "server").start()
        try:
            if "training" in options.only:
                results["training"] = training(options.data, options.steps, options.rounds, server, work)
            if "time_to_92" in options.only:
                results["time_to_92"] = time_to_92(options.data, server, work)
            if "predict" in options.only:
                results["predict"] = predict(options.data, results["time_to_92"]["emo, configs/fast.yaml"], work)
        finally:
            server.kill()
    found = ratios(results)
    options.out.mkdir(parents=True, exist_ok=True)
    report = markdown(results, found, options)
    (options.out / "benchmark.md").write_text(report)
    (options.out / "benchmark.json").write_text(json.dumps({"ratios": found, "results": results}, indent=2))
    plot(results, options.out / "benchmark.png")
    log_to_mlflow(found, options.out, options)
    print("\n" + report)


if __name__ == "__main__":
    main()
