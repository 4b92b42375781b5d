"""`python -m emo audit`: which training labels are likely wrong, by confident learning on out-of-fold probabilities.

    python -m emo audit --config configs/base.yaml --config configs/offline.yaml [--audit.folds 5] [--audit.name NAME]

The training split is dealt into K stratified, seeded folds; each fold is an ordinary `emo fit` on
the other folds (`--data.holdout_fold k`), nested under the audit's MLflow parent run, which then
predicts the fold it never saw (`emo.tracking.HeldOutPredictions`). The folds are the trials of an
Optuna study (`emo.sweep`): processes sharing its storage share them, a killed audit continues where
it stopped, no fold runs twice. When every fold is in, the parent run gets the out-of-fold
probabilities, `audit/label_issues.csv` (`emo.audit.issues`), the noise matrix, counts per class,
and the digest of the training split it audited; `--data.audit_run RUN_ID` trains on the result.
From the features each fold logs (`emo.fit.heldout`), cleanlab's Datalab adds near-duplicates, outliers and class
imbalance in the training split, and the validation and test texts near a training text (`emo.audit.data_issues`);
a Datalab that cannot run says why in one line, and the audit of the labels still finishes.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from optuna.trial import TrialState

from emo import UserError
from emo.analysis import frame_label_names
from emo.arguments import check_config_files
from emo.audit.data_issues import split_pairs, training_issues
from emo.audit.issues import label_issues, noise_figure, noise_matrix
from emo.audit.settings import AuditSettings
from emo.data import load_local_splits
from emo.data.folds import check_folds
from emo.fit import LOGGER_CLASS, lightning_errors
from emo.fit.heldout import read_heldout_features
from emo.quiet import quiet_libraries
from emo.spec import (
    AUDIT_TAG,
    AUDITED_DIGEST_TAG,
    CLASS_IMBALANCE_METRIC,
    DATALAB_FAILURE_TAG,
    FOLD_RUNS_TAG,
    HELDOUT_ARTIFACT,
    HELDOUT_FEATURES_ARTIFACT,
    LABEL_ISSUES_ARTIFACT,
    NEAR_DUPLICATE_PAIRS_METRIC,
    NEAR_DUPLICATES_ARTIFACT,
    NEAR_DUPLICATES_METRIC,
    NOISE_MATRIX_ARTIFACTS,
    OUT_OF_FOLD_ARTIFACT,
    OUTLIERS_ARTIFACT,
    OUTLIERS_METRIC,
    SPLIT_NEAR_DUPLICATES_ARTIFACT,
    STAGE_SPLITS,
    near_train_metrics,
    predictions_artifact,
)
from emo.store import log_params, prepare_tracking, resolve_tracking_uri
from emo.sweep import RUN_ATTR, ParentRun, StudyCLI, Sweep, SweepSettings


class AuditCLI(StudyCLI):
    """The `fit` options plus an `audit:` section; the folds are the trials of a study over `data.holdout_fold`."""

    section = "audit"

    def add_arguments_to_parser(self, parser):
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(AuditSettings, "audit", instantiate=False)

    def before_instantiate_classes(self):
        super().before_instantiate_classes()
        config = self.config
        problem = audit_problem(config, LOGGER_CLASS)
        if problem:
            self.parser.error(problem)
        if config.data.data_dir:  # a Hub dataset is checked when its folds are dealt
            train = load_local_splits(config.data.data_dir, config.data.labels)["train"]
            check_folds(train["label"], config.audit.folds, train.features["label"].names)

    def instantiate_classes(self):
        self.settings = AuditSettings(**self.config.audit.as_dict())

    def trial_template(self) -> dict:
        template = super().trial_template()
        template["data"].update(folds=self.settings.folds, fold_seed=self.settings.seed, holdout_fold=None)
        # A fold's model serves the audit only: its probabilities are logged, its weights neither uploaded nor registered.
        template["trainer"]["logger"]["init_args"]["log_model"] = False
        template["registry"].update(log_model=False, registered_model_name=None)
        return template


class AuditParent(ParentRun):
    """An audit's parent run: its settings as params; when every fold is in, its tables (`finish`)."""

    def __init__(self, client, claims, study, settings: AuditSettings, template: dict):
        self.settings = settings
        experiment = template["trainer"]["logger"]["init_args"]["experiment_name"]
        tags = {AUDIT_TAG: f"{settings.folds} folds, seed {settings.seed}"}
        super().__init__(client, claims, study, experiment, settings.name, tags)

    def describe(self, run_id: str) -> None:
        super().describe(run_id)
        log_params(
            self.client,
            run_id,
            {
                "audit.folds": self.settings.folds,
                "audit.seed": self.settings.seed,
                "audit.near_duplicate_threshold": self.settings.near_duplicate_threshold,
            },
        )


def audit_problem(config, logger_class: str) -> str | None:
    """An audit that cannot run as asked, in one line (exit status 2)."""
    if config.audit.folds < 2:
        return f"--audit.folds {config.audit.folds}: an audit needs at least 2 folds (one held out, one to train on)"
    if config.data.holdout_fold is not None:
        return "--data.holdout_fold: the audit chooses each fold itself; leave it unset"
    if config.data.train_size:
        return "--data.train_size: an audit covers every training example; leave it unset"
    logger = config.trainer.logger
    if not logger or getattr(logger, "class_path", None) != logger_class:
        return f"an audit nests its folds in MLflow: --trainer.logger must be {logger_class}"
    return None


def sweep_of(settings: AuditSettings, template: dict) -> SweepSettings:
    return SweepSettings(
        study_name=settings.name,
        storage=settings.storage,
        params={"data.holdout_fold": list(range(settings.folds))},
        metric=template["checkpoint"]["monitor"],
        trial_heartbeat_s=settings.trial_heartbeat_s,
        trial_grace_s=settings.trial_grace_s,
    )


def out_of_fold(client, run_ids: list[str]) -> tuple[pd.DataFrame, str]:
    """Every training example's probabilities from the fold that held it out, in the split's order; and the digest of
    the split the folds were dealt from."""
    frames, digests = [], set()
    with tempfile.TemporaryDirectory() as folder:
        for run_id in run_ids:
            frames.append(
                pd.read_csv(client.download_artifacts(run_id, HELDOUT_ARTIFACT, folder), keep_default_na=False)
            )
            digests.add(client.get_run(run_id).data.tags.get(AUDITED_DIGEST_TAG))
    if len(digests) != 1:
        raise UserError(
            f"the folds were dealt from different training splits ({len(digests)} digests): audit again "
            "under a new --audit.name"
        )
    frame = pd.concat(frames).sort_values("index").reset_index(drop=True)
    if not np.array_equal(frame["index"].to_numpy(), np.arange(len(frame))):
        raise UserError("the folds' held-out examples do not cover the training split once each")
    return frame, digests.pop()


def finish(sweep: Sweep, settings: AuditSettings) -> None:
    """Once, when every fold is in: the audit's tables, picture, metrics and tags on the parent run.

    One process finishes an audit (a claim); the others wait for it. A process killed after it took the claim leaves
    the audit unfinished: whoever waits finds no digest after `trial_grace_s` and finishes it instead (the tables are
    the same whoever writes them). The digest of the audited split is the last tag: it says the audit is complete.
    """
    trials = sweep.study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
    if len(trials) < settings.folds:
        failed = sorted(
            t.params.get("data.holdout_fold")
            for t in sweep.study.get_trials(deepcopy=False)
            if t.state == TrialState.FAIL
        )
        raise UserError(
            f"audit {settings.name}: fold(s) {', '.join(map(str, failed))} failed (see above), so "
            f"{settings.folds - len(trials)} of {settings.folds} folds are missing; audit again under a new "
            "--audit.name"
        )
    client, run_id = sweep.client, sweep.parent_run_id
    if not sweep.queue.claims.claim(f"audit-{len(trials)}", str(os.getpid())):
        if finished_elsewhere(client, run_id, settings.trial_grace_s):
            sweep.parent.ended()
            return
        print(
            f"emo: audit {settings.name}: the process that took its finish did not end it in {settings.trial_grace_s}"
            " s; finishing it here",
            file=sys.stderr,
        )
    fold_runs = [trial.user_attrs[RUN_ATTR] for trial in sorted(trials, key=lambda t: t.params["data.holdout_fold"])]
    frame, digest = out_of_fold(client, fold_runs)
    names = frame_label_names(frame)
    given = frame["label"].map({name: i for i, name in enumerate(names)}).to_numpy()
    probabilities = frame[[f"p_{name}" for name in names]].to_numpy()
    issues = label_issues(list(frame["text"]), given, probabilities, names)
    matrix = noise_matrix(given, probabilities, names)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        issues.to_csv(folder / "label_issues.csv", index=False)
        frame.to_csv(folder / "out_of_fold_probabilities.csv", index=False)
        matrix.to_csv(folder / "noise_matrix.csv")
        noise_figure(matrix).savefig(folder / "noise_matrix.png", dpi=120)
        for name, artifact in (
            ("label_issues.csv", LABEL_ISSUES_ARTIFACT),
            ("out_of_fold_probabilities.csv", OUT_OF_FOLD_ARTIFACT),
            ("noise_matrix.csv", NOISE_MATRIX_ARTIFACTS[0]),
            ("noise_matrix.png", NOISE_MATRIX_ARTIFACTS[1]),
        ):
            client.log_artifact(run_id, str(folder / name), os.path.dirname(artifact))
    flagged = issues["given"].value_counts()
    client.log_metric(run_id, "audit/flagged", len(issues))
    client.log_metric(run_id, "audit/flagged_share", len(issues) / len(frame))
    for name in names:
        client.log_metric(run_id, f"audit/flagged_{name}", int(flagged.get(name, 0)))
    log_params(client, run_id, {"audit.examples": len(frame)})
    try:
        found = record_data_issues(client, run_id, fold_runs, frame, names, settings.near_duplicate_threshold)
    except Exception as error:  # noqa: BLE001 - whatever stops Datalab, the audit of the labels stands
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        client.set_tag(run_id, DATALAB_FAILURE_TAG, reason)
        found = f"no near-duplicates or outliers: Datalab could not run ({reason})"
    client.set_tag(run_id, FOLD_RUNS_TAG, ", ".join(fold_runs))
    client.set_tag(run_id, AUDITED_DIGEST_TAG, digest)  # last: the audit is complete (emo.store.read_audit)
    sweep.parent.ended()
    print(
        f"emo: audit {settings.name}: {len(issues)} of {len(frame)} training labels flagged "
        f"({len(issues) / len(frame):.1%}); run {run_id}, {LABEL_ISSUES_ARTIFACT}",
        file=sys.stderr,
    )
    print(f"emo: audit {settings.name}: {found}", file=sys.stderr)


def fold_features(client, fold_runs: list[str], folder: str) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Each fold's features (`emo.fit.heldout`), in fold order."""
    return [
        read_heldout_features(client.download_artifacts(run_id, HELDOUT_FEATURES_ARTIFACT, f"{folder}/{fold}"))
        for fold, run_id in enumerate(fold_runs)
    ]


def evaluation_texts(client, run_id: str, folder: str) -> dict[str, pd.DataFrame]:
    """`{split: its examples' text and label, indexed by their place in the split}` for validation and test, as a fold
    logged them with its predictions (every fold evaluates the same examples)."""
    texts = {}
    for stage, split in STAGE_SPLITS.items():
        frame = pd.read_csv(
            client.download_artifacts(run_id, predictions_artifact(stage), f"{folder}/{stage}"), keep_default_na=False
        )
        texts[split] = frame.set_index("example")[["text", "label"]]
    return texts


def record_data_issues(
    client, run_id: str, fold_runs: list[str], frame: pd.DataFrame, names: list[str], threshold: float
) -> str:
    """Datalab on the folds' features, its tables and counts on the audit's run; returns what it found, in one line.

    The training split: each example's features from the fold model that held it out (its out-of-fold probabilities
    beside them), for near-duplicates, outliers and class imbalance. Validation and test: in each fold model's space,
    its held-out training examples with every validation and test example, so a training text and a validation or test
    text are compared by the one model that saw neither."""
    with tempfile.TemporaryDirectory() as folder:
        folds = fold_features(client, fold_runs, folder)
        evaluation = evaluation_texts(client, fold_runs[0], folder)
    index = np.concatenate([fold["heldout"][0] for fold in folds])
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], frame["index"].to_numpy()):
        raise ValueError("the folds' features do not cover the training split once each")
    features = np.concatenate([fold["heldout"][1] for fold in folds])[order]
    given = frame["label"].map({name: i for i, name in enumerate(names)}).to_numpy()
    probabilities = frame[[f"p_{name}" for name in names]].to_numpy()
    training = training_issues(list(frame["text"]), given, features, probabilities, names, threshold)
    pairs = pd.concat(
        [
            split_pairs(fold["heldout"], {split: fold[split] for split in evaluation}, threshold).assign(fold=k)
            for k, fold in enumerate(folds)
        ],
        ignore_index=True,
    )
    texts = frame.set_index("index")
    split = pd.DataFrame(
        {
            "split": pairs["split"],
            "example": pairs["example"],
            "text": [evaluation[s].at[e, "text"] for s, e in zip(pairs["split"], pairs["example"], strict=True)],
            "label": [evaluation[s].at[e, "label"] for s, e in zip(pairs["split"], pairs["example"], strict=True)],
            "index": pairs["index"],
            "train_text": texts.loc[pairs["index"], "text"].to_numpy(),
            "train_label": texts.loc[pairs["index"], "label"].to_numpy(),
            "fold": pairs["fold"],
            "distance": pairs["distance"],
        }
    )
    rank = split["split"].map({name: i for i, name in enumerate(STAGE_SPLITS.values())})
    split = split.assign(rank=rank).sort_values(["rank", "distance", "example"]).drop(columns="rank")
    with tempfile.TemporaryDirectory() as folder:
        for table, artifact in (
            (training.near_duplicates, NEAR_DUPLICATES_ARTIFACT),
            (training.outliers, OUTLIERS_ARTIFACT),
            (split, SPLIT_NEAR_DUPLICATES_ARTIFACT),
        ):
            path = Path(folder) / Path(artifact).name
            table.to_csv(path, index=False)
            client.log_artifact(run_id, str(path), os.path.dirname(artifact))
    client.log_metric(run_id, NEAR_DUPLICATES_METRIC, training.near_duplicate_examples)
    client.log_metric(run_id, NEAR_DUPLICATE_PAIRS_METRIC, len(training.near_duplicates))
    client.log_metric(run_id, OUTLIERS_METRIC, len(training.outliers))
    client.log_metric(run_id, CLASS_IMBALANCE_METRIC, training.class_imbalance)
    near = []
    for stage, name in STAGE_SPLITS.items():
        rows = split[split["split"] == name]
        counts = {
            "examples": rows["example"].nunique(),
            "pairs": len(rows),
            "conflicting": rows.loc[rows["label"] != rows["train_label"], "example"].nunique(),
        }
        for what, metric in near_train_metrics(stage).items():
            client.log_metric(run_id, metric, counts[what])
        near.append(
            f"{counts['examples']} {name} texts near a training text ({counts['conflicting']} of another label)"
        )
    return (
        f"{training.near_duplicate_examples} training texts in {len(training.near_duplicates)} near-duplicate pairs, "
        f"{len(training.outliers)} outliers; {', '.join(near)}; {SPLIT_NEAR_DUPLICATES_ARTIFACT}"
    )


def finished_elsewhere(client, run_id: str, grace_s: float) -> bool:
    """Whether another process completes the audit (its digest tag) within `grace_s`, looked for every second."""
    deadline = time.monotonic() + grace_s
    while True:
        if AUDITED_DIGEST_TAG in client.get_run(run_id).data.tags:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def main(args: list[str]) -> None:
    quiet_libraries()
    check_config_files(args)
    with lightning_errors():
        cli = AuditCLI(args)
        settings, template = cli.settings, cli.trial_template()
        prepare_tracking(resolve_tracking_uri(), template["trainer"]["logger"]["init_args"]["experiment_name"])
        sweep = Sweep(
            sweep_of(settings, template),
            template,
            lambda client, claims, study: AuditParent(client, claims, study, settings, template),
        )
        try:
            complete = sweep.run()
        except KeyboardInterrupt:
            raise SystemExit("emo: audit interrupted; run the same command again to continue it") from None
        if complete:
            finish(sweep, settings)
