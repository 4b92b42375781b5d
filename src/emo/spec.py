"""The names every part of emo agrees on: splits, metrics, tags, artifacts, and which settings define an experiment.

Defined once, here, and derived everywhere else: the model builds its torchmetrics from `METRICS`,
the CLI offers their validation names as checkpoint monitors, reports and the run and model-version
descriptions show the headline ones. Adding a metric is one line in `METRICS`.
Nothing here imports more than the standard library: every command may read it.
"""

import dataclasses

DEFAULT_EXPERIMENT = "Emotion-Classification-FineTuning"
DEFAULT_REGISTERED_MODEL = "distilbert-emotion-classifier"
SPLITS = ("train", "validation", "test")
STAGE_SPLITS = {"val": "validation", "test": "test"}  # the evaluation stages (metric prefixes) and their splits


@dataclasses.dataclass(frozen=True)
class Metric:
    """An evaluation metric, logged as `<stage>/<key>` (per class: `<stage>/<key>_<label>`)."""

    key: str
    label: str  # how reports and descriptions name it
    torchmetric: str  # its class in `torchmetrics.classification` (or a dotted path), built with the number of classes
    options: tuple[tuple[str, object], ...] = ()  # further arguments of that class
    per_class: bool = False  # one value per label
    lower_is_better: bool = False  # an error, not a score
    headline: bool = False  # in reports, the run's and the registered version's description
    progress_bar: bool = False  # shown while training


METRICS = (
    Metric("acc", "accuracy", "MulticlassAccuracy", (("average", "micro"),), headline=True, progress_bar=True),
    Metric(
        "f1_weighted", "weighted F1", "MulticlassF1Score", (("average", "weighted"),), headline=True, progress_bar=True
    ),
    Metric("f1_macro", "macro F1", "MulticlassF1Score", (("average", "macro"),), headline=True),
    Metric("precision", "precision", "MulticlassPrecision", (("average", None),), per_class=True),
    Metric("recall", "recall", "MulticlassRecall", (("average", None),), per_class=True),
    Metric("f1", "F1", "MulticlassF1Score", (("average", None),), per_class=True),
    Metric(
        "ece",
        "expected calibration error",
        "MulticlassCalibrationError",
        (("n_bins", 15), ("norm", "l1")),
        lower_is_better=True,
    ),
    Metric(
        "classwise_ece",
        "class-wise calibration error",
        "emo.metrics.ClasswiseCalibrationError",
        (("n_bins", 15),),
        lower_is_better=True,
    ),
    Metric("brier", "Brier score", "emo.metrics.BrierScore", lower_is_better=True),
)
LOSS = "loss"  # `<stage>/loss`: plain cross-entropy at every stage, whatever the training loss
TRAIN_LOSS, TRAIN_LR = "train/loss", "train/lr"
TRAIN_SPEED, TRAIN_SECONDS = "train/samples_per_sec", "train/seconds"


def metric_names(stage: str, labels=()) -> list[str]:
    """Every metric an evaluation at `stage` logs: `val/loss`, `val/acc`, ..., `val/recall_<label>` for each of `labels`
    (the data's classes, `emo.data`)."""
    names = [f"{stage}/{LOSS}"]
    for metric in METRICS:
        keys = [f"{metric.key}_{label}" for label in labels] if metric.per_class else [metric.key]
        names += [f"{stage}/{key}" for key in keys]
    return names


def is_metric_name(name: str, stage: str) -> bool:
    """Whether an evaluation at `stage` logs `name` for some labels: `val/acc`, `val/loss`, `val/f1_<any label>`."""
    key = name.removeprefix(f"{stage}/")
    if key == name:
        return False
    return key == LOSS or any(key.startswith(f"{m.key}_") if m.per_class else key == m.key for m in METRICS)


def headline_metrics(stage: str) -> dict[str, str]:
    """`{"test/acc": "accuracy", ...}`: the metrics a reader looks at first, with their names."""
    return {f"{stage}/{metric.key}": metric.label for metric in METRICS if metric.headline}


def is_maximized(name: str) -> bool:
    """Larger is better for every metric but a loss and an error (`lower_is_better`)."""
    key = name.rsplit("/", 1)[-1]
    return not name.endswith(LOSS) and not any(m.lower_is_better and key == m.key for m in METRICS)


# Tags emo sets on runs ("emo.*"), and those of MLflow and Optuna it sets or reads.
TASK_TAG, STAGE_TAG = "emo.task", "emo.stage"
MODEL_TAG, DATASET_TAG, DATA_DIGEST_TAG = "emo.model", "emo.dataset", "emo.data_digest"
VALIDATION_DIGEST_TAG = "emo.validation_digest"  # of the validation split alone: runs validated on the same examples
KEPT_STEP_TAG = "emo.kept_step"  # the step the validation metrics of the checkpoint a fit kept were logged at
LABELS_TAG = "emo.labels"  # the classes a run trained on, in id order (a JSON list)
CONFIG_FILES_TAG, FAILURE_TAG = "emo.config_files", "emo.failure"
TEACHER_TAG, TEACHER_VERSIONS_TAG, TEACHER_RUNS_TAG = (
    "emo.teacher",
    "emo.teacher_versions",
    "emo.teacher_run_ids",
)  # distilled
TEMPERATURE_TAG = "emo.temperature"  # a calibrated run and its registered version: the temperature in its head
PREDICTION_SETS_TAG = "emo.prediction_sets"  # a run and its registered version: the sets' thresholds (JSON)
EXPORT_SOURCE_TAG, QUANTIZE_TAG = "emo.export.source", "emo.export.quantize"  # an ONNX export: its source version, int8
EXPORT_SOURCE_RUN_TAG = "emo.export.source_run"  # an export's run: the run of its source
TOP_LABEL_MAP_TAG = "emo.export.top_label_map"  # an export served through a top-label map: its validation examples
MODEL_URI_TAG = "emo.model_uri"  # where the run's logged model is, so a sweep can register its best trial later
HEARTBEAT_TAG, HEARTBEAT_INTERVAL_TAG, ENDED_BY_TAG = "emo.heartbeat", "emo.heartbeat_interval_s", "emo.ended_by"
SWEEP_TAG, WORKER_TAG = "emo.sweep", "emo.worker"  # a sweep's parent run; which sweep process ran a trial
AUDIT_TAG, AUDITED_DIGEST_TAG = (
    "emo.audit",
    "emo.audited_digest",
)  # an audit's parent run; the training split it audited
AUDIT_RUN_TAG = "emo.audit_run"  # a fit on audited data: the audit it followed
FOLD_RUNS_TAG = "emo.fold_runs"  # of an audit: its folds' runs, in fold order
BEST_RUN_TAG, BEST_TRIAL_TAG = "emo.best_run_id", "emo.best_trial"
REGISTERED_VERSION_TAG, AGGREGATED_RUNS_TAG = "emo.registered_version", "emo.aggregated_runs"
STUDY_TAG, TRIAL_TAG, TRIAL_STATE_TAG = "optuna.study", "optuna.trial", "optuna.trial.state"
DESCRIPTION_TAG = "mlflow.note.content"  # the run page's description
GIT_COMMIT_TAG = "mlflow.source.git.commit"
PARENT_RUN_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
DATA_CONTEXT_TAG = "mlflow.data.context"  # on a logged dataset: the split it was used as

# Artifacts of a run.
CONFIG_ARTIFACT = "config.yaml"
SUMMARY_ARTIFACT = "summary.json"
MODEL_ARTIFACT = "model"  # MLflow's transformers flavor: model and tokenizer
CONFUSION_ARTIFACT = "test/confusion_matrix.png"
CONFUSION_NORMALISED_ARTIFACT = "test/confusion_matrix_normalised.png"
PER_CLASS_ARTIFACTS = ("test/per_class_report.json", "test/per_class_report.md")
F1_PER_CLASS_ARTIFACT = "test/f1_per_class.png"
MISTAKES_ARTIFACT = "test/confident_mistakes.md"
RELIABILITY_ARTIFACT = "test/reliability_diagram.png"  # confidence against accuracy: after T; of an export, its map
TEACHER_ARTIFACT = "teacher/train_probabilities.pt"  # the teachers' mean class probabilities on the training examples
TRIAL_TEMPLATE_ARTIFACT, REPORT_ARTIFACTS = "trial_template.yaml", "report"  # of a sweep's parent run
SWEEP_ANALYSIS_ARTIFACTS = "sweep"  # of a sweep's parent run: what the sweep learnt (emo.report.importance)
PARAM_IMPORTANCES_ARTIFACTS = (
    "sweep/param_importances.json",
    "sweep/param_importances.md",
    "sweep/param_importances.png",
)
PARALLEL_COORDINATE_ARTIFACT, OPTIMIZATION_HISTORY_ARTIFACT = (
    "sweep/parallel_coordinate.png",
    "sweep/optimization_history.png",
)


# Of the splits a run uses, counted as it starts (`emo.data.leaks`), logged at step 0: the examples of validation and of
# test whose text stands in train; the training texts two or more examples hold, and of those, the ones with two labels.
IN_TRAIN_METRICS = {split: f"data/{stage}_in_train" for stage, split in STAGE_SPLITS.items()}  # data/val_in_train, ...
TRAIN_DUPLICATES, TRAIN_CONFLICTING = "data/train_duplicates", "data/train_conflicting"
LEAKS_DROPPED = "data/leaks_dropped"  # with data.drop_leaks: the training examples it dropped
LEAKS_ARTIFACT = "data/leaks.csv"  # every example those metrics count: its label, its text's labels in train

HELDOUT_ARTIFACT = "audit/heldout_probabilities.csv"  # of an audit's fold: the held-out examples' probabilities
LABEL_ISSUES_ARTIFACT = "audit/label_issues.csv"  # of an audit: the flagged examples, most likely wrong first
OUT_OF_FOLD_ARTIFACT = "audit/out_of_fold_probabilities.csv"  # of an audit: every training example's
NOISE_MATRIX_ARTIFACTS = ("audit/noise_matrix.csv", "audit/noise_matrix.png")  # given x suggested, counts
# Of an audit's fold: the fold model's pooled encoder output (float16) of its held-out, validation and test examples.
HELDOUT_FEATURES_ARTIFACT = "audit/heldout_features.npz"
# Of an audit, from cleanlab's Datalab on the folds' features: training texts near one another (pairs), outliers (most
# outlying first), and validation or test texts near a training text, compared by the fold model that saw neither.
NEAR_DUPLICATES_ARTIFACT = "audit/near_duplicates.csv"
OUTLIERS_ARTIFACT = "audit/outliers.csv"
SPLIT_NEAR_DUPLICATES_ARTIFACT = "audit/split_near_duplicates.csv"
DATALAB_FAILURE_TAG = "emo.datalab_failure"  # of an audit whose Datalab could not run: why, in one line

# Metrics of an audit's Datalab: training examples in a near-duplicate set, outliers, examples of a class too rare
# (cleanlab's class imbalance); of validation and test (`near_train_metrics`), their texts near a training text.
NEAR_DUPLICATES_METRIC = "audit/near_duplicates"
NEAR_DUPLICATE_PAIRS_METRIC = "audit/near_duplicate_pairs"
OUTLIERS_METRIC = "audit/outliers"
CLASS_IMBALANCE_METRIC = "audit/class_imbalance"


def near_train_metrics(stage: str) -> dict[str, str]:
    """`{what: metric}` for a split's texts near training texts (`stage`: `val` or `test`, as `STAGE_SPLITS`):
    `examples` of the split with a near-duplicate in training, the `pairs` (split text, training text), and the
    examples whose training near-duplicates include `conflicting` labels (another label than theirs)."""
    return {what: f"audit/{stage}_near_train{suffix}" for what, suffix in
            (("examples", ""), ("pairs", "_pairs"), ("conflicting", "_conflicting"))}  # fmt: skip


def predictions_artifact(stage: str) -> str:
    """Where a run keeps its predictions: `test/predictions.csv`, and `val/` for the validation of its kept checkpoint."""
    return f"{stage}/predictions.csv"


# Settings (as dotted params) that do not define an experiment. Two runs that differ only in these
# learnt the same thing: `emo report` groups them, and a resumed run may change the first kind.
WATCHING = ("ckpt_path", "resume_new_run", "weights_only", "trainer.enable_progress_bar", "trainer.enable_model_summary",
            "data.num_workers", "data.eval_batch_size", "last_checkpoint.every_n_train_steps",
            "trainer.logger.init_args.flush_timeout_s", "trainer.logger.init_args.heartbeat_interval_s",
            "trainer.logger.init_args.system_metrics_interval_s",
            "trainer.logger.init_args.run_name", "trainer.logger.init_args.tags")  # fmt: skip
PLACEMENT = ("trainer.logger", "trainer.default_root_dir", "checkpoint.dirpath", "prediction.")  # where it is recorded
SEED_SETTING = "seed_everything"


def defines_experiment(setting: str) -> bool:
    """Whether a setting changes what a run learns (the seed does; see SEED_SETTING for grouping seeds)."""
    return not setting.startswith(WATCHING + PLACEMENT)
