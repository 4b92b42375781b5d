"""What a reader needs of a test besides its numbers, logged in the run (`record_evaluation_report`).

Under `test/`: the confusion matrices (counts and normalised), the per-class report (`.md`, `.json`)
and F1 bars, the predictions (and, after a fit, `val/predictions.csv` of the kept checkpoint's
validation) and the most confident mistakes. At the top: `summary.json` (data, timing, peak
memory, best checkpoint, test metrics) and the run page's description.
"""

import json
import re
import resource
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics.classification import MulticlassConfusionMatrix

from emo import spec
from emo.analysis import (
    confident_mistakes,
    mistakes_markdown,
    normalised_confusion_figure,
    per_class_f1_figure,
    predictions_frame,
)
from emo.conformal import prediction_sets
from emo.prediction_file import set_text
from emo.spec import (
    CONFUSION_ARTIFACT,
    CONFUSION_NORMALISED_ARTIFACT,
    DESCRIPTION_TAG,
    F1_PER_CLASS_ARTIFACT,
    MISTAKES_ARTIFACT,
    PER_CLASS_ARTIFACTS,
    STAGE_SPLITS,
    SUMMARY_ARTIFACT,
    headline_metrics,
    predictions_artifact,
)
from emo.tracking.clock import TrainingClock
from emo.tracking.predictions import confusion_matrix


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def summary(trainer: Trainer, pl_module: LightningModule, clock: TrainingClock, kept: dict | None) -> dict:
    """The run's `summary.json`: data, timing, peak memory, the kept checkpoint (`kept`: its `path` and `score`,
    `{monitor: value}`), the test's metrics."""
    datamodule = trainer.datamodule
    return {
        "model": pl_module.hparams.model_name_or_path,
        "dataset": datamodule.source,
        "data_digest": datamodule.data_digest if datamodule.digests else None,
        "examples": {split: len(examples) for split, examples in datamodule.splits.items()},
        "epochs_trained": trainer.current_epoch,
        "global_steps": trainer.global_step,
        **clock.summary(trainer.world_size),
        "peak_memory_mib": round(peak_memory_mib()),
        "devices": f"{trainer.world_size} x {trainer.strategy.root_device.type}",
        "best_checkpoint": (kept or {}).get("path"),
        "best_score": (kept or {}).get("score"),
        "test": {k: round(float(v), 5) for k, v in trainer.callback_metrics.items() if k.startswith("test/")},
    }


@rank_zero_only
def record_evaluation_report(
    logger,
    trainer: Trainer,
    pl_module: LightningModule,
    predictions: dict,
    clock: TrainingClock,
    kept: dict | None = None,
    sets: dict | None = None,
) -> None:
    """The test's artifacts (`predictions`: `test`, and after a fit `val`, the kept checkpoint's validation; with the
    test's prediction sets where `sets` holds their thresholds), the run's summary and its description; without a
    logger (`--trainer.logger false`) the summary alone, beside the checkpoints."""
    if logger is None:
        path = Path(trainer.default_root_dir) / SUMMARY_ARTIFACT
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary(trainer, pl_module, clock, kept), indent=2), encoding="utf-8")
        return
    label_names = list(pl_module.hparams.label_names)
    confusion = confusion_matrix(predictions["test"], len(label_names))
    figure, _ = MulticlassConfusionMatrix(len(label_names)).plot(val=confusion, labels=label_names)
    figure.set_size_inches(7, 6)
    logger.record_figure(figure, CONFUSION_ARTIFACT)
    logger.record_figure(normalised_confusion_figure(confusion, label_names), CONFUSION_NORMALISED_ARTIFACT)
    report = per_class_report(trainer.callback_metrics, confusion, label_names)
    report_json, report_md = PER_CLASS_ARTIFACTS
    logger.record_text(json.dumps(report, indent=2), report_json)
    logger.record_text(report_markdown(report), report_md)
    logger.record_figure(per_class_f1_figure(report), F1_PER_CLASS_ARTIFACT)
    for stage, predicted in predictions.items():
        frame = split_predictions(trainer.datamodule, stage, predicted, label_names)
        if stage == "test" and sets:
            inside = prediction_sets(predicted["probabilities"].double().numpy(), sets)
            frame["set"] = [set_text(classes, label_names) for classes in inside]
        logger.record_text(frame.to_csv(index=False), predictions_artifact(stage))
        if stage == "test":
            logger.record_text(mistakes_markdown(confident_mistakes(frame)), MISTAKES_ARTIFACT)
    record = summary(trainer, pl_module, clock, kept)
    logger.record_text(json.dumps(record, indent=2), SUMMARY_ARTIFACT)
    logger.record_tags({DESCRIPTION_TAG: run_description(record)})


def split_predictions(datamodule, stage: str, predictions: dict, label_names: list[str]):
    """The split's texts beside the gathered predictions, in the split file's order."""
    texts = datamodule.splits[STAGE_SPLITS[stage]].sort("example")["text"]
    examples = predictions["example"].tolist()
    return predictions_frame(
        [texts[i] for i in examples], predictions["label"], predictions["probabilities"], label_names, examples
    )


def run_description(summary: dict) -> str:
    """Markdown for the run page: what was trained on what, the test result, the kept epoch, the time it took."""
    test = summary["test"]
    best = summary["best_checkpoint"] or ""
    epoch = re.search(r"epoch(\d+)", Path(best).name)
    values = [(label, f"{test.get(key, float('nan')):.4f}") for key, label in headline_metrics("test").items()]
    scores = [
        f"{label} **{value}**" if i == 0 else f"{label} {value}" for i, (label, value) in enumerate(values)
    ]  # the first in bold
    lines = [
        f"**{summary['model']}** fine-tuned on `{summary['dataset']}` "
        f"({summary['examples'].get('train', '?')} training examples, {summary['devices']}).",
        "",
        f"Test: {', '.join(scores)}.",
        f"Best checkpoint: epoch {int(epoch.group(1)) + 1 if epoch else '?'} of {summary['epochs_trained']} "  # 1-based
        f"(by {', '.join(f'{k} = {v:.4f}' for k, v in (summary['best_score'] or {}).items()) or 'the last epoch'}).",
        f"Training: {summary['train_seconds']:.0f} s at {summary['train_samples_per_sec'] or 0:.0f} samples/s; "
        f"see test/ for the confusion matrices, per-class F1 and the most confident mistakes.",
    ]
    return "\n".join(lines)


def per_class_report(metrics: dict, confusion, label_names: list[str]) -> dict:
    """Per label: each per-class metric of `emo.spec.METRICS` on test, and the label's support."""
    support = confusion.sum(dim=1).tolist()
    keys = [metric.key for metric in spec.METRICS if metric.per_class]
    return {
        label: {**{key: round(float(metrics[f"test/{key}_{label}"]), 4) for key in keys}, "support": int(support[i])}
        for i, label in enumerate(label_names)
    }


def report_markdown(report: dict) -> str:
    columns = list(next(iter(report.values())))
    lines = ["| label | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, row in report.items():
        lines.append(
            f"| {label} | " + " | ".join(f"{row[c]:.4f}" if c != "support" else str(row[c]) for c in columns) + " |"
        )
    return "\n".join(lines) + "\n"
