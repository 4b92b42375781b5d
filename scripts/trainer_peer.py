"""The peer emo is measured against: a Hugging Face `Trainer` fine-tune, as a careful user writes it.

    python scripts/trainer_peer.py --model models/all-MiniLM-L6-v2 --data data/emotion \
        --bf16 --group-by-length --epochs 1 --lr 1e-4 --evaluate

Standalone on purpose (torch, transformers and torchmetrics only, no emo, no `datasets`), so it
also runs on a bare GPU machine. Prints one JSON line: samples/s, tokens/s, padding share,
training seconds, peak RSS and, with --evaluate, test accuracy and F1.
"""

import time

STARTED = time.monotonic()  # start-up is measured from here, before torch and transformers load

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def read_split(data_dir: Path, split: str, tokenizer, max_length: int) -> list[dict]:
    rows = [
        line.rsplit(";", 1)
        for line in (data_dir / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    encoded = tokenizer([text for text, _ in rows], truncation=True, max_length=max_length)
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": LABELS.index(label.strip())}
        for ids, mask, (_, label) in zip(encoded["input_ids"], encoded["attention_mask"], rows, strict=True)
    ]


class FirstStep(TrainerCallback):
    seconds = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.seconds is None:
            self.seconds = time.monotonic() - STARTED


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output-dir", default="/tmp/trainer_peer")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument(
        "--warmup-ratio",
        type=float,
        default=0.0,
        help="share of the steps (transformers 5 reads a warmup_steps < 1 so)",
    )
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--group-by-length", action="store_true")
    parser.add_argument("--train-size", type=int, default=None, help="the first N training examples only (tiny runs)")
    parser.add_argument("--test-size", type=int, default=None, help="the first N test examples only (tiny runs)")
    parser.add_argument("--evaluate", action="store_true", help="test accuracy and F1 after training")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train = read_split(Path(args.data), "train", tokenizer, args.max_length)[: args.train_size]
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(LABELS))
    training = TrainingArguments(
        output_dir=args.output_dir, num_train_epochs=args.epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64, learning_rate=args.lr,
        warmup_steps=args.warmup_ratio, weight_decay=0.01, use_cpu=not torch.cuda.is_available(), bf16=args.bf16, report_to=[], seed=42, dataloader_num_workers=0, disable_tqdm=True,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        save_strategy="no", eval_strategy="no", logging_strategy="no",
    )  # fmt: skip
    collator = DataCollatorWithPadding(tokenizer)
    padded = [0, 0]  # real and padded tokens of the training batches: tokens/s, padding share

    def counting_collator(features):
        batch = collator(features)
        padded[0] += int(batch["attention_mask"].sum())
        padded[1] += batch["attention_mask"].numel()
        return batch

    first_step = FirstStep()
    trainer = Trainer(
        model=model, args=training, train_dataset=train, data_collator=counting_collator, callbacks=[first_step]
    )
    result = trainer.train()
    seconds = result.metrics["train_runtime"]
    report = {
        "samples_per_sec": round(result.metrics["train_samples_per_second"], 2),
        "tokens_per_sec": round(padded[0] / seconds, 1),
        "padding_share": round(1 - padded[0] / padded[1], 4),
        "train_seconds": round(seconds, 1),
        "steps": result.global_step,
        "seconds_to_first_step": round(first_step.seconds, 1),
        "device": f"{max(training.n_gpu, 1)} x {training.device.type}",
    }
    if args.evaluate:
        test = read_split(Path(args.data), "test", tokenizer, args.max_length)[: args.test_size]
        output = trainer.predict(test)
        predicted, labels = torch.tensor(output.predictions).argmax(-1), torch.tensor(output.label_ids)
        n = len(LABELS)
        report |= {
            "test_acc": round(float(multiclass_accuracy(predicted, labels, n, average="micro")), 4),
            "test_f1_weighted": round(float(multiclass_f1_score(predicted, labels, n, average="weighted")), 4),
            "test_f1_macro": round(float(multiclass_f1_score(predicted, labels, n, average="macro")), 4),
        }
    report["wall_seconds"] = round(time.monotonic() - STARTED, 1)
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
