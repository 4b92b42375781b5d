"""Training throughput of emo beside a Hugging Face `Trainer` script, measured in one run.

    .venv/bin/python scripts/benchmark_throughput.py --steps 100

Each variant trains the same model on the same real data for the same number of steps, in
its own process, one after the other; the table gives samples/s and the ratio to the
`Trainer` with padding per batch. Timings on a shared machine are noisy: compare ratios
from one run, not numbers across runs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRAINER_SCRIPT = """
import json, sys, time
from datasets import Dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments)
from emo.data import LABELS, read_txt_examples
model_dir, data_dir, steps, batch_size, group, out = sys.argv[1:7]
tokenizer = AutoTokenizer.from_pretrained(model_dir)
train = Dataset.from_list(list(read_txt_examples(__import__("pathlib").Path(data_dir) / "train.txt")))
train = train.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True, remove_columns=["text"])
model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(LABELS))
args = TrainingArguments(output_dir=out, max_steps=int(steps), per_device_train_batch_size=int(batch_size),
                         learning_rate=1e-4, weight_decay=0.01, report_to=[],
                         train_sampling_strategy="group_by_length" if group == "1" else "random",
                         save_strategy="no", eval_strategy="no", logging_strategy="no", seed=42,
                         dataloader_num_workers=0, disable_tqdm=True)
result = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer)).train()
print(json.dumps({"samples_per_sec": result.metrics["train_samples_per_second"]}))
"""


def run(command: list[str], **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, **kwargs)
    if done.returncode:
        sys.exit(f"failed: {' '.join(command[:4])} ...\n{done.stderr[-3000:]}")
    return done.stdout


def run_trainer(model_dir: str, data_dir: str, steps: int, batch_size: int, grouped: bool) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-c", TRAINER_SCRIPT, model_dir, data_dir, str(steps), str(batch_size), "1" if grouped else "0", out]
        stdout = run(command)
    return json.loads(stdout.strip().splitlines()[-1])["samples_per_sec"]


def run_emo(model_dir: str, data_dir: str, steps: int, batch_size: int, grouped: bool) -> float:
    import mlflow

    with tempfile.TemporaryDirectory() as out:
        uri = f"sqlite:///{out}/mlflow.db"
        command = [
            sys.executable, "-m", "emo", "fit", "--config", "configs/base.yaml", "--config", "configs/offline.yaml",
            "--model.model_name_or_path", model_dir, "--data.data_dir", data_dir,
            "--data.batch_size", str(batch_size), "--data.group_by_length", str(grouped).lower(),
            "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
            "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", out, "--registry.log_model", "false",
            "--trainer.logger.init_args.log_model", "false",
        ]  # fmt: skip
        run(command, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
        fitted = mlflow.MlflowClient(uri).search_runs(["1"])[0]
        return fitted.data.metrics["train/samples_per_sec"]


VARIANTS = {
    "Trainer, padding per batch": (run_trainer, False),
    "Trainer, group_by_length": (run_trainer, True),
    "emo, padding per batch (base)": (run_emo, False),
    "emo, group_by_length (offline)": (run_emo, True),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default=str(ROOT / "models/all-MiniLM-L6-v2"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/emotion"))
    args = parser.parse_args()
    results = {}
    for name, (measure, grouped) in VARIANTS.items():
        results[name] = measure(args.model, args.data, args.steps, args.batch_size, grouped)
        print(f"{name:34s} {results[name]:7.1f} samples/s", flush=True)
    baseline = results["Trainer, padding per batch"]
    print(f"\n{args.steps} steps of batch {args.batch_size}, {Path(args.model).name}; ratio to the Trainer with padding per batch:")
    for name, value in results.items():
        print(f"  {name:34s} {value:7.1f} samples/s  x{value / baseline:.2f}")


if __name__ == "__main__":
    main()
