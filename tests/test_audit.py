"""`emo audit` against a real MLflow server and real processes: planted flips found on a small learnable data set, folds
shared by two processes (one killed), training on the audited data, and every bad input in one line."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from emo import commands
from emo.audit import label_issues
from emo.data import EmotionDataModule, content_digest, load_local_splits
from emo.data.folds import stratified_folds
from emo.spec import (
    AUDIT_RUN_TAG,
    AUDIT_TAG,
    AUDITED_DIGEST_TAG,
    DATA_DIGEST_TAG,
    LABEL_ISSUES_ARTIFACT,
    NEAR_DUPLICATES_ARTIFACT,
    OUT_OF_FOLD_ARTIFACT,
    OUTLIERS_ARTIFACT,
    SPLIT_NEAR_DUPLICATES_ARTIFACT,
)
from emo.store import read_audit
from helpers.data import ROOT, write_tiny_model
from helpers.gates import gate_callback, open_gate, wait_for_reached
from helpers.processes import run_emo, start_emo

WORDS = {  # each class its own words: a tiny random BERT learns them in a few epochs
    "anger": "angry mad furious hate rage yell annoyed bitter",
    "fear": "scared afraid worried nervous panic terrified anxious fright",
    "joy": "happy glad smile laugh sunny party fun great",
    "sadness": "sad cry lonely tears grief miss lost gloomy",
}
PER_CLASS, FLIPS = 60, 12  # 240 training examples, 5 % of them flipped


def learnable_split(generator, per_class: int) -> list[tuple[str, str]]:
    examples = []
    for label, words in WORDS.items():
        words = words.split()
        examples += [("i feel " + " ".join(generator.choice(words, 4)), label) for _ in range(per_class)]
    return [examples[i] for i in generator.permutation(len(examples))]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A learnable 4-class data set whose training split has FLIPS labels flipped; and which."""
    folder, generator = tmp_path_factory.mktemp("planted"), np.random.default_rng(0)
    train = learnable_split(generator, PER_CLASS)
    flipped = generator.choice(len(train), FLIPS, replace=False)
    for i in flipped:
        text, label = train[i]
        train[i] = (text, generator.choice([other for other in WORDS if other != label]))
    test = learnable_split(generator, 10)
    test[0] = train[0]  # a test text that stands in training: the audit's Datalab pairs them
    for name, examples in (("train", train), ("val", learnable_split(generator, 10)), ("test", test)):
        (folder / f"{name}.txt").write_text("".join(f"{text};{label}\n" for text, label in examples))
    return folder, set(flipped.tolist())


def audit_args(tmp_path, model_dir, data_dir, name: str, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/offline.yaml"),
            "--model.model_name_or_path", str(model_dir), "--data.data_dir", str(data_dir), "--data.labels", "null",
            "--model.freeze_embeddings", "false", "--model.dropout", "0", "--optimizer.lr", "1e-2",
            "--lr_scheduler.warmup_ratio", "0", "--data.batch_size", "8", "--trainer.max_epochs", "12",
            "--trainer.check_val_every_n_epoch", "12", "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "5",
            "--trainer.default_root_dir", str(tmp_path / "outputs"),
            "--trainer.logger.init_args.experiment_name", "audit-test",
            "--audit.folds", "3", "--audit.name", name, "--audit.storage", f"sqlite:///{tmp_path / 'optuna.db'}",
            *extra]  # fmt: skip


def audit_run(name: str):
    [run] = mlflow.search_runs(
        experiment_names=["audit-test"],
        filter_string=f"tags.`{AUDIT_TAG}` != '' and attributes.run_name = '{name}'",
        output_format="list",
    )
    return run


def test_folds_are_stratified_seeded_and_cover_each_example_once():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3)
    folds = stratified_folds(labels, 3, seed=1)
    assert sorted(np.bincount(folds)) == [6, 7, 7]  # sizes differ by one at most
    for label, count in ((0, 10), (1, 7), (2, 3)):
        assert (
            np.bincount(folds[labels == label], minlength=3).max()
            - np.bincount(folds[labels == label], minlength=3).min()
            <= 1
        )
        assert (labels[folds >= 0] == label).sum() == count
    assert np.array_equal(stratified_folds(labels, 3, seed=1), folds)
    assert not np.array_equal(stratified_folds(labels, 3, seed=2), folds)


def test_a_fold_trains_on_every_example_but_those_it_holds_out(small_data_dir, tiny_model_dir):
    """The audit's promise in one line of the data module: a fold's model never sees the examples it predicts."""
    whole = load_local_splits(str(small_data_dir))["train"]
    folds = stratified_folds(whole["label"], 3, seed=0)
    for fold in range(3):
        module = EmotionDataModule(
            data_dir=str(small_data_dir), tokenizer_name_or_path=str(tiny_model_dir), holdout_fold=fold, folds=3
        )
        splits = module.raw_splits()
        heldout = splits["heldout"]["index"]
        assert heldout == np.flatnonzero(folds == fold).tolist()
        rest = np.flatnonzero(folds != fold)
        assert splits["train"]["text"] == [whole["text"][i] for i in rest]  # the others, each once, none held out
        assert splits["train"]["label"] == [whole["label"][i] for i in rest]


def an_audit_run(client, data_dir: Path, flagged: dict[int, str]) -> str:
    """A finished audit of `data_dir`'s training split, as `emo audit` records it, flagging `flagged` (index: the
    suggested class)."""
    train = load_local_splits(str(data_dir))["train"]
    names = train.features["label"].names
    experiment = client.get_experiment_by_name("audit-test") or client.create_experiment("audit-test")
    experiment_id = getattr(experiment, "experiment_id", experiment)
    run_id = client.create_run(experiment_id, tags={AUDIT_TAG: "3 folds, seed 0"}).info.run_id
    issues = pd.DataFrame(
        {
            "index": list(flagged),
            "text": [train["text"][i] for i in flagged],
            "given": [names[train["label"][i]] for i in flagged],
            "suggested": list(flagged.values()),
            "score": [0.01] * len(flagged),
        }
    )
    client.log_text(run_id, issues.to_csv(index=False), LABEL_ISSUES_ARTIFACT)
    client.set_tag(run_id, AUDITED_DIGEST_TAG, content_digest(train))
    client.set_terminated(run_id)
    return run_id


@pytest.mark.parametrize("action", ["drop", "relabel"])
def test_a_fit_on_audited_data_drops_or_relabels_exactly_what_the_audit_flagged(
    action, small_data_dir, tiny_model_dir, tracking_uri
):
    client = mlflow.MlflowClient()
    train = load_local_splits(str(small_data_dir))["train"]
    names = train.features["label"].names
    flagged = {3: "surprise", 10: "love", 11: names[train["label"][11]]}  # one "suggested" as given: changes nothing
    audit = an_audit_run(client, small_data_dir, flagged)
    module = EmotionDataModule(
        data_dir=str(small_data_dir), tokenizer_name_or_path=str(tiny_model_dir), audit_run=audit, audit_action=action
    )
    changed = module.raw_splits()["train"]
    assert module.audit_changed == len(flagged)
    if action == "drop":
        kept = [i for i in range(len(train)) if i not in flagged]
        assert changed["text"] == [train["text"][i] for i in kept] and changed["label"] == [
            train["label"][i] for i in kept
        ]
    else:
        assert changed["text"] == train["text"]
        expected = [names.index(flagged[i]) if i in flagged else label for i, label in enumerate(train["label"])]
        assert changed["label"] == expected and expected != train["label"]


def test_confidently_contradicted_labels_are_flagged_most_likely_wrong_first():
    generator = np.random.default_rng(0)
    given = np.repeat([0, 1, 2], 50)
    probabilities = np.full((150, 3), 0.05)
    probabilities[np.arange(150), given] = 0.9
    wrong = [3, 60, 120]  # the model is sure these belong elsewhere, the surest first
    for rank, i in enumerate(wrong):
        probabilities[i] = 0.02 + 0.01 * rank
        probabilities[i, (given[i] + 1) % 3] = 0.96 - 0.02 * rank
    probabilities += generator.uniform(0, 0.01, probabilities.shape)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    issues = label_issues([f"text {i}" for i in range(150)], given, probabilities, ["a", "b", "c"])
    assert list(issues["index"]) == wrong
    assert list(issues["given"]) == ["a", "b", "c"] and list(issues["suggested"]) == ["b", "c", "a"]
    assert list(issues["text"]) == ["text 3", "text 60", "text 120"] and issues["score"].is_monotonic_increasing


@pytest.mark.slow  # three fits of 12 epochs: minutes on a busy 2-core machine (`make test-slow`)
def test_an_audit_finds_planted_flips_and_a_fit_trains_without_them(tmp_path, planted, tracking_uri):
    data_dir, flipped = planted
    model_dir = write_tiny_model(tmp_path / "tiny")
    code, out = run_emo(["audit", *audit_args(tmp_path, model_dir, data_dir, "planted")], tmp_path / "audit.log")
    assert code == 0, out[-3000:]
    parent = audit_run("planted")
    client = mlflow.MlflowClient()
    issues = pd.read_csv(client.download_artifacts(parent.info.run_id, LABEL_ISSUES_ARTIFACT, str(tmp_path)))
    found = flipped & set(issues["index"])
    assert len(found) / len(flipped) >= 0.7, (sorted(flipped), issues.head(20))
    assert len(found) / len(issues) >= 0.5  # and mostly the planted ones
    out_of_fold = pd.read_csv(client.download_artifacts(parent.info.run_id, OUT_OF_FOLD_ARTIFACT, str(tmp_path)))
    assert list(out_of_fold["index"]) == list(range(len(WORDS) * PER_CLASS))
    assert parent.data.metrics["audit/flagged"] == len(issues)
    assert sum(parent.data.metrics[f"audit/flagged_{label}"] for label in WORDS) == len(issues)
    folds = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(run.data.params["data.holdout_fold"] for run in folds) == ["0", "1", "2"]
    assert {run.info.status for run in folds} == {"FINISHED"} and parent.info.status == "FINISHED"
    assert f"emo: audit planted: {len(issues)} of 240 training labels flagged" in out
    across = pd.read_csv(client.download_artifacts(parent.info.run_id, SPLIT_NEAR_DUPLICATES_ARTIFACT, str(tmp_path)))
    planted_pair = across[(across["split"] == "test") & (across["example"] == 0)]
    assert list(planted_pair["index"]) == [0] and planted_pair["text"].iloc[0] == planted_pair["train_text"].iloc[0]
    assert parent.data.metrics["audit/test_near_train"] >= 1 and "audit/near_duplicates" in parent.data.metrics
    for artifact in (NEAR_DUPLICATES_ARTIFACT, OUTLIERS_ARTIFACT):
        assert set(pd.read_csv(client.download_artifacts(parent.info.run_id, artifact, str(tmp_path))).columns)
    assert "training texts in" in out and "test texts near a training text" in out

    code, out = run_emo(
        [
            "fit",
            *audit_args(tmp_path, model_dir, data_dir, "planted")[:-6],
            "--data.audit_run",
            parent.info.run_id,
            "--trainer.max_epochs",
            "1",
            "--trainer.check_val_every_n_epoch",
            "1",
        ],
        tmp_path / "fit.log",
    )
    assert code == 0, out[-3000:]
    [fit] = client.search_runs([parent.info.experiment_id], f"tags.`{AUDIT_RUN_TAG}` = '{parent.info.run_id}'")
    assert fit.data.params["data.audit_dropped"] == str(len(issues))
    plain_digest = folds[0].data.tags[DATA_DIGEST_TAG]  # a fold's is of other training examples still
    assert fit.data.tags[DATA_DIGEST_TAG] not in (plain_digest, None)
    summary = json.loads(open(client.download_artifacts(fit.info.run_id, "summary.json", str(tmp_path))).read())
    assert summary["examples"]["train"] == 240 - len(issues)

    other = tmp_path / "other"  # the audit is of these examples only
    other.mkdir()
    for name in ("train", "val", "test"):
        (other / f"{name}.txt").write_text((data_dir / f"{name}.txt").read_text().replace("i feel", "we feel"))
    code, out = run_emo(
        ["fit", *audit_args(tmp_path, model_dir, other, "planted")[:-6], "--data.audit_run", parent.info.run_id],
        tmp_path / "other.log",
    )
    assert code == 1 and f"emo: error: --data.audit_run {parent.info.run_id} audited other training examples" in out


def test_folds_shared_by_two_processes_one_killed_finish_each_fold_once(
    tmp_path, small_data_dir, tiny_model_dir, tracking_uri
):
    args = audit_args(
        tmp_path,
        tiny_model_dir,
        small_data_dir,
        "killed",
        "--trainer.max_epochs",
        "1",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--last_checkpoint.every_n_train_steps",
        "2",
        "--trainer.log_every_n_steps",
        "1",
        "--audit.trial_heartbeat_s",
        "2",
        "--audit.trial_grace_s",
        "20",
    )  # margins for 2 busy cores
    gate = tmp_path / "gate"
    killed = start_emo(
        ["audit", *args, *gate_callback(gate, at_step=4, run_suffix="trial-1", once_per_folder=True)],
        tmp_path / "killed.log",
    )
    wait_for_reached(gate, processes=1, watch=(killed,))
    killed.kill()  # in the middle of fold 1: nobody marks it as stopped
    killed.wait(timeout=60)
    code, out = run_emo(
        ["audit", *args, *gate_callback(gate, at_step=4, run_suffix="trial-1", once_per_folder=True)],
        tmp_path / "second.log",
    )
    assert code == 0, out[-3000:]
    parent = audit_run("killed")
    client = mlflow.MlflowClient()
    folds = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    # fold 1 continued from its last checkpoint in the same run: each fold once, every run finished
    assert sorted(run.data.params["data.holdout_fold"] for run in folds) == ["0", "1", "2"]
    assert {run.info.status for run in folds} == {"FINISHED"} and parent.info.status == "FINISHED"
    out_of_fold = pd.read_csv(client.download_artifacts(parent.info.run_id, OUT_OF_FOLD_ARTIFACT, str(tmp_path)))
    assert list(out_of_fold["index"]) == list(range(300))


def test_bad_audits_stop_in_one_line_and_leave_nothing_running(tmp_path, small_data_dir, tiny_model_dir, tracking_uri):
    base = audit_args(tmp_path, tiny_model_dir, small_data_dir, "bad")
    cases = [
        (["audit", *base, "--audit.folds", "1"], 2, "--audit.folds 1: an audit needs at least 2 folds"),
        (["audit", *base, "--audit.folds", "150"], 1, "150 folds need at least 150 training examples of each class"),
        (["fit", *base[:-6], "--data.audit_run", "0123456789abcdef0123456789abcdef"], 1,
         "--data.audit_run 0123456789abcdef0123456789abcdef: no run with this id"),
        (["fit", *base[:-6], "--data.audit_run", "not-a-run"], 1, "--data.audit_run not-a-run: give the id of an emo audit"),
    ]  # fmt: skip
    for i, (args, status, message) in enumerate(cases):
        code, out = run_emo(args, tmp_path / f"case-{i}.log")
        errors = [line for line in out.splitlines() if line.startswith("emo: error:") or "rror" in line]
        assert code == status and len(errors) == 1 and message in errors[0], out[-2000:]
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("audit-test")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    assert not [run for run in runs if run.info.status == "RUNNING"]
    fit_run = client.create_run(experiment.experiment_id if experiment else client.create_experiment("audit-test"))
    client.set_terminated(fit_run.info.run_id)
    code, out = run_emo(["fit", *base[:-6], "--data.audit_run", fit_run.info.run_id], tmp_path / "not-audit.log")
    assert code == 1 and f"--data.audit_run {fit_run.info.run_id}: run" in out and "is not an emo audit" in out


def test_two_audit_processes_at_the_same_time_share_the_folds_and_finish_the_audit_once(
    tmp_path, small_data_dir, tiny_model_dir, tracking_uri
):
    args = audit_args(tmp_path, tiny_model_dir, small_data_dir, "together", "--trainer.max_epochs", "1",
                      "--trainer.check_val_every_n_epoch", "1")  # fmt: skip
    gate = tmp_path / "gate"  # each process holds its first fold until both have one: both surely take part
    processes = [start_emo(["audit", *args, *gate_callback(gate, at_step=2)], tmp_path / f"{i}.log") for i in range(2)]
    wait_for_reached(gate, processes=2, watch=processes)
    open_gate(gate)
    logs = []
    for i, process in enumerate(processes):
        assert process.wait(timeout=900) == 0, (tmp_path / f"{i}.log").read_text()[-3000:]
        logs.append((tmp_path / f"{i}.log").read_text())
    parent = audit_run("together")
    client = mlflow.MlflowClient()
    folds = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(run.data.params["data.holdout_fold"] for run in folds) == ["0", "1", "2"]  # each fold once
    assert len({run.data.tags["emo.worker"] for run in folds}) == 2  # both processes fitted folds
    assert parent.info.status == "FINISHED" and AUDITED_DIGEST_TAG in parent.data.tags
    assert sum("emo: audit together:" in log and "training labels flagged" in log for log in logs) == 1
    out_of_fold = pd.read_csv(client.download_artifacts(parent.info.run_id, OUT_OF_FOLD_ARTIFACT, str(tmp_path)))
    assert list(out_of_fold["index"]) == list(range(300))


def test_an_audit_whose_finishing_process_died_is_finished_by_the_next(
    tmp_path, small_data_dir, tiny_model_dir, tracking_uri, monkeypatch
):
    """The first process takes the claim to finish the audit and dies before the digest that completes it; a rerun
    finds the claim taken and no digest after the grace, and finishes it."""
    args = audit_args(tmp_path, tiny_model_dir, small_data_dir, "orphaned", "--trainer.max_epochs", "1",
                      "--trainer.check_val_every_n_epoch", "1", "--audit.trial_grace_s", "3")  # fmt: skip
    import emo.audit.command as audit_command

    def dies(*_args, **_kwargs):
        raise SystemExit("killed after taking the claim")

    with monkeypatch.context() as patch:
        patch.setattr(audit_command, "label_issues", dies)
        with pytest.raises(SystemExit, match="killed after taking the claim"):
            commands.main(["audit", *args])
    parent = audit_run("orphaned")
    assert AUDITED_DIGEST_TAG not in parent.data.tags
    with pytest.raises(Exception, match="has not finished"):
        read_audit(parent.info.run_id, tracking_uri)
    commands.main(["audit", *args])
    issues, digest = read_audit(parent.info.run_id, tracking_uri)
    assert digest == content_digest(load_local_splits(str(small_data_dir))["train"])
    assert audit_run("orphaned").info.status == "FINISHED"
