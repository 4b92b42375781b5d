"""Labels from the data, end to end against a real MLflow server: a 4-label data set whose names are found in its files
(sorted), fitted by the offline config with no label flag, a 7-label one whose files hold ids into `--data.labels`, and
CARER, whose dataset_info.json keeps the Hub's ids. Every per-class metric, the predictions, the model's
config, the registered version, predict, sweep and report follow the data's classes; a checkpoint, registered model or
teacher of other classes is one line."""

import csv
import json
import re
from pathlib import Path

import mlflow
import pytest
import yaml

from emo import UserError, report, sweep
from emo.data.fetch import CARER_LABELS
from emo.fit import EmoCLI
from emo.spec import METRICS
from helpers.data import DATA_DIR, ROOT, SHIPPED_TRAINING_CONFIGS, TRAINING_CONFIGS, shrunk_args
from helpers.processes import run_emo

# TweetEval-like: CARER's sadness, joy and anger, love as optimism; fear and surprise dropped. Names only, no
# data.labels: the classes are the training split's names, sorted.
FOUR_FROM_CARER = {"sadness": "sadness", "joy": "joy", "love": "optimism", "anger": "anger"}
FOUR = ["anger", "joy", "optimism", "sadness"]
# ISEAR-like, in ISEAR's order (not sorted): the files hold ids into these names, given as --data.labels.
SEVEN = ["joy", "fear", "anger", "sadness", "disgust", "shame", "guilt"]
SEVEN_FROM_CARER = {
    "joy": "joy",
    "fear": "fear",
    "anger": "anger",
    "sadness": "sadness",
    "surprise": "disgust",
    "love": "guilt",
}
SPLIT_FILES = {"train": "train", "val": "val", "test": "test"}
NOT_FOUR = sorted(set(CARER_LABELS) - set(FOUR))  # love, fear, surprise


def carer_examples(small_data_dir: Path, split: str) -> list[tuple[str, str]]:
    return [tuple(line.rsplit(";", 1)) for line in (small_data_dir / f"{split}.txt").read_text().splitlines() if line]


def write_four(small_data_dir: Path, folder: Path) -> Path:
    """.csv files with label names; fear and surprise dropped."""
    folder.mkdir(parents=True)
    for split in SPLIT_FILES:
        rows = [
            (text, FOUR_FROM_CARER[label])
            for text, label in carer_examples(small_data_dir, split)
            if label in FOUR_FROM_CARER
        ]
        with open(folder / f"{split}.csv", "w", newline="") as file:
            csv.writer(file).writerows([("text", "label"), *rows])
    return folder


def write_seven(small_data_dir: Path, folder: Path) -> Path:
    """.jsonl files with integer ids into SEVEN; every seventh example is `shame` (id 5), so that all seven occur."""
    folder.mkdir(parents=True)
    for split in SPLIT_FILES:
        examples = carer_examples(small_data_dir, split)
        ids = [
            SEVEN.index("shame") if i % 7 == 6 else SEVEN.index(SEVEN_FROM_CARER[label])
            for i, (_, label) in enumerate(examples)
        ]
        lines = [json.dumps({"text": text, "label": id_}) for (text, _), id_ in zip(examples, ids, strict=True)]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def file_labels(folder: Path, split: str) -> list[str]:
    """The labels of a split file, as names, in the file's order."""
    if (folder / f"{split}.csv").exists():
        return [row["label"] for row in csv.DictReader(open(folder / f"{split}.csv"))]
    return [SEVEN[json.loads(line)["label"]] for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def fit_args(
    tmp_path: Path, model_dir: Path, data: Path, experiment: str, model_name: str, *extra: str, configs=TRAINING_CONFIGS
) -> list[str]:
    return shrunk_args(tmp_path, model_dir, data, "--trainer.max_epochs", "1", "--optimizer.lr", "5e-3",
                       "--trainer.logger.init_args.experiment_name", experiment,
                       "--registry.registered_model_name", model_name, *extra, configs=configs)  # fmt: skip


@pytest.fixture(scope="module")
def four_data(small_data_dir, tmp_path_factory) -> Path:
    return write_four(small_data_dir, tmp_path_factory.mktemp("four") / "data")


@pytest.fixture(scope="module")
def seven_data(small_data_dir, tmp_path_factory) -> Path:
    return write_seven(small_data_dir, tmp_path_factory.mktemp("seven") / "data")


@pytest.fixture(scope="module")
def four(four_data, tiny_model_dir, mlflow_server, tmp_path_factory):
    """A fit on the 4-label data by the offline config, no label flag, registered as `labels-four`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        tmp_path = tmp_path_factory.mktemp("four-fit")
        cli = EmoCLI(
            args=[
                "fit",
                *fit_args(tmp_path, tiny_model_dir, four_data, "labels-four", "labels-four"),
            ]
        )
    client = mlflow.MlflowClient(mlflow_server)
    return cli, client, client.get_run(cli.trainer.logger.run_id)


@pytest.fixture(scope="module")
def seven(seven_data, tiny_model_dir, mlflow_server, tmp_path_factory):
    """A fit on the 7-label data: ids in the files, their names from --data.labels."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        tmp_path = tmp_path_factory.mktemp("seven-fit")
        cli = EmoCLI(
            args=[
                "fit",
                *fit_args(
                    tmp_path,
                    tiny_model_dir,
                    seven_data,
                    "labels-seven",
                    "labels-seven",
                    "--data.labels",
                    json.dumps(SEVEN),
                ),
            ]
        )
    client = mlflow.MlflowClient(mlflow_server)
    return cli, client, client.get_run(cli.trainer.logger.run_id)


@pytest.fixture(scope="module")
def four_sweep(four_data, tiny_model_dir, mlflow_server, tmp_path_factory):
    """`emo sweep` on the 4-label data: a grid of two learning rates, one epoch each, in the experiment of `four`."""
    tmp_path = tmp_path_factory.mktemp("four-sweep")
    name = "labels-four-lr"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        patch.chdir(tmp_path)
        sweep.main(fit_args(tmp_path, tiny_model_dir, four_data, "labels-four", name,
                            "--sweep.study_name", name, "--sweep.storage", f"sqlite:///{tmp_path}/optuna.db",
                            "--sweep.params", '{"optimizer.init_args.lr": [1.0e-3, 5.0e-3]}', "--sweep.pruner", "null",
                            configs=["--config", str(ROOT / "configs/sweep.yaml"), "--config", str(ROOT / "configs/offline.yaml")]))  # fmt: skip
    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("labels-four").experiment_id
    [parent] = client.search_runs([experiment], filter_string=f"tags.`emo.sweep` = '{name}'")
    children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return name, client, parent, children


def per_class_names(stage: str, labels) -> set[str]:
    return {f"{stage}/{metric.key}_{label}" for metric in METRICS if metric.per_class for label in labels}


def read_rows(path) -> tuple[list[str], list[dict]]:
    with open(path) as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames), list(reader)


def test_a_fit_on_four_labels_found_in_the_files_logs_each_class_s_metrics_and_no_carer_name(four, four_data):
    cli, client, run = four
    assert list(cli.datamodule.label_names) == list(cli.model.hparams.label_names) == FOUR  # found, sorted
    metrics = set(run.data.metrics)
    assert per_class_names("val", FOUR) | per_class_names("test", FOUR) <= metrics
    assert not [name for name in metrics if name.endswith(tuple(f"_{label}" for label in NOT_FOUR))]
    assert json.loads(run.data.tags["emo.labels"]) == FOUR
    assert run.data.params["data.labels"] == "None"
    report = json.loads(open(client.download_artifacts(run.info.run_id, "test/per_class_report.json")).read())
    truth = file_labels(four_data, "test")
    assert {label: row["support"] for label, row in report.items()} == {label: truth.count(label) for label in FOUR}
    assert {label: row["f1"] for label, row in report.items()} == pytest.approx(
        {label: run.data.metrics[f"test/f1_{label}"] for label in FOUR}, abs=1e-4
    )


def test_the_four_label_test_predictions_have_a_probability_column_per_class(four, four_data, tracking_uri):
    _, client, run = four
    columns, rows = read_rows(client.download_artifacts(run.info.run_id, "test/predictions.csv"))
    assert [c for c in columns if c.startswith("p_")] == [f"p_{label}" for label in FOUR]
    assert [row["label"] for row in rows] == file_labels(four_data, "test")  # the file's order, names as written
    for row in rows:
        probabilities = {label: float(row[f"p_{label}"]) for label in FOUR}
        assert row["predicted"] == max(probabilities, key=probabilities.get)
    accuracy = sum(row["predicted"] == row["label"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(run.data.metrics["test/acc"], abs=1e-6)


def test_the_four_label_model_s_config_and_registered_version_name_its_classes(four, tracking_uri):
    cli, client, run = four
    config = json.loads((cli.trainer.logger.folder / "model" / "config.json").read_text())
    assert config["id2label"] == {str(i): label for i, label in enumerate(FOUR)}
    assert config["label2id"] == {label: i for i, label in enumerate(FOUR)}
    version = client.get_model_version_by_alias("labels-four", "champion")
    assert version.run_id == run.info.run_id
    assert "Classes: anger, joy, optimism, sadness." in version.description
    assert mlflow.models.get_model_info("models:/labels-four@champion").metadata["labels"] == FOUR


def predict(tmp_path, model_dir, data, ckpt_path: str, *extra: str) -> tuple[list[str], list[dict]]:
    tmp_path.mkdir()
    texts, output = tmp_path / "texts.txt", tmp_path / "predictions.csv"
    texts.write_text("i feel so happy and hopeful\nthis makes me furious\ni miss her so much\n")
    # The data folder holds four labels, but predict reads no training data: the model's four name the columns.
    EmoCLI(
        args=[
            "predict",
            *shrunk_args(tmp_path, model_dir, data, *extra),
            "--ckpt_path",
            ckpt_path,
            "--data.predict_file",
            str(texts),
            "--prediction.output_file",
            str(output),
        ]
    )
    return read_rows(output)


def test_predict_from_the_checkpoint_and_the_registered_model_writes_the_model_s_classes(
    four, four_data, tiny_model_dir, tmp_path, tracking_uri
):
    cli, _, _ = four
    columns, rows = predict(
        tmp_path / "ckpt", tiny_model_dir, four_data, cli.trainer.checkpoint_callback.best_model_path
    )
    assert columns == ["text", "label", *(f"p_{label}" for label in FOUR), "set"]  # the fit's prediction sets
    for row in rows:
        probabilities = {label: float(row[f"p_{label}"]) for label in FOUR}
        assert row["label"] == max(probabilities, key=probabilities.get)
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-3)
        assert set(row["set"].split("|")) - {""} <= set(FOUR)
    registered_columns, registered_rows = predict(
        tmp_path / "registered", tiny_model_dir, four_data, "models:/labels-four@champion"
    )
    assert registered_columns == columns
    assert [row["label"] for row in registered_rows] == [row["label"] for row in rows]  # the same weights
    assert [row["set"] for row in registered_rows] == [row["set"] for row in rows]  # and the same sets


def test_a_sweep_on_four_labels_records_them_in_every_trial_and_registers_the_best(four_sweep):
    name, client, parent, children = four_sweep
    assert len(children) == 2 and parent.info.status == "FINISHED"
    for child in children:
        assert child.info.status == "FINISHED" and json.loads(child.data.tags["emo.labels"]) == FOUR
        assert per_class_names("test", FOUR) <= set(child.data.metrics)
        assert not [m for m in child.data.metrics if m.endswith(tuple(f"_{label}" for label in NOT_FOUR))]
    version = client.get_model_version_by_alias(name, "champion")
    assert version.run_id == parent.data.tags["emo.best_run_id"]
    assert "Classes: anger, joy, optimism, sadness." in version.description


def test_report_and_compare_over_four_label_runs(four, four_sweep, tmp_path, tracking_uri, capsys):
    _, _, run = four
    _, _, _, children = four_sweep
    report.main(["--experiment", "labels-four", "--output_dir", str(tmp_path / "reports")])
    printed = capsys.readouterr().out
    for each in (run, *children):
        assert each.info.run_name in printed
        assert f"{each.data.metrics['test/acc']:.4f}" in printed
    assert (tmp_path / "reports" / "labels-four" / "report.md").is_file()
    report.main(["--compare", run.info.run_id, children[0].info.run_id])
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("test/acc"))
    a, b = (float(value) for value in row.split()[1:3])
    assert (a, b) == pytest.approx((run.data.metrics["test/acc"], children[0].data.metrics["test/acc"]), abs=1e-4)


def test_a_fit_on_seven_labels_given_as_ids_names_them_by_data_labels(seven, seven_data, tracking_uri):
    cli, client, run = seven
    assert list(cli.model.hparams.label_names) == SEVEN  # as given, not sorted
    assert per_class_names("test", SEVEN) <= set(run.data.metrics)
    assert json.loads(run.data.tags["emo.labels"]) == SEVEN
    columns, rows = read_rows(client.download_artifacts(run.info.run_id, "test/predictions.csv"))
    assert [c for c in columns if c.startswith("p_")] == [f"p_{label}" for label in SEVEN]
    assert [row["label"] for row in rows] == file_labels(seven_data, "test")  # id 5 is shame, id 4 disgust, ...
    config = json.loads((cli.trainer.logger.folder / "model" / "config.json").read_text())
    assert config["id2label"] == {str(i): label for i, label in enumerate(SEVEN)}
    version = client.get_model_version_by_alias("labels-seven", "champion")
    assert f"Classes: {', '.join(SEVEN)}." in version.description


def test_a_four_label_checkpoint_tested_on_seven_label_data_is_one_line_and_no_run(
    four, seven_data, tiny_model_dir, tmp_path, mlflow_server
):
    cli, client, _ = four
    code, output = run_emo(["test", *fit_args(tmp_path, tiny_model_dir, seven_data, "labels-mismatch", "labels-mismatch",
                                              "--data.labels", json.dumps(SEVEN)),
                            "--ckpt_path", cli.trainer.checkpoint_callback.best_model_path],
                           tmp_path / "test.log", env={"MLFLOW_TRACKING_URI": mlflow_server})  # fmt: skip
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 1, output
    # Before it, only the seed line and the bars of the first read of this data (as a fit on new data shows them).
    assert not [line for line in lines[:-1] if re.search(r"(?i)error|warning|traceback|exception", line)], output
    assert lines[-1] == (
        f"emo: error: {cli.trainer.checkpoint_callback.best_model_path}: the model's classes are {FOUR}, "
        f"the data's are {SEVEN}"
    )
    experiment = client.get_experiment_by_name("labels-mismatch")
    assert experiment is None or not client.search_runs([experiment.experiment_id])


def test_a_checkpoint_tested_on_data_of_the_same_classes_in_another_order_is_refused(
    four, four_data, tiny_model_dir, tmp_path, tracking_uri
):
    """Ids, not names, reach the model: the same four classes in another order would score every prediction against
    another class's label."""
    cli, _, _ = four
    reordered = FOUR[::-1]
    best = cli.trainer.checkpoint_callback.best_model_path
    args = fit_args(
        tmp_path, tiny_model_dir, four_data, "labels-order", "labels-order", "--data.labels", json.dumps(reordered)
    )
    with pytest.raises(UserError) as refused:
        EmoCLI(args=["test", *args, "--ckpt_path", best])
    assert str(refused.value) == f"{best}: the model's classes are {FOUR}, the data's are {reordered}"


def test_a_four_label_registered_model_tested_on_seven_label_data_is_refused(
    four, seven_data, tiny_model_dir, tmp_path, tracking_uri
):
    with pytest.raises(UserError) as refused:
        EmoCLI(
            args=[
                "test",
                *fit_args(
                    tmp_path,
                    tiny_model_dir,
                    seven_data,
                    "labels-mismatch",
                    "labels-mismatch",
                    "--data.labels",
                    json.dumps(SEVEN),
                ),
                "--ckpt_path",
                "models:/labels-four@champion",
            ]
        )
    assert str(refused.value) == f"models:/labels-four@champion: the model's classes are {FOUR}, the data's are {SEVEN}"


def test_a_teacher_of_four_labels_for_a_seven_label_student_is_refused_before_a_run(
    four, seven_data, tiny_model_dir, tmp_path, tracking_uri
):
    _, client, _ = four
    teacher = "models:/labels-four@champion"
    with pytest.raises(UserError) as refused:
        EmoCLI(
            args=[
                "fit",
                *fit_args(
                    tmp_path,
                    tiny_model_dir,
                    seven_data,
                    "labels-student",
                    "labels-student",
                    "--data.labels",
                    json.dumps(SEVEN),
                    "--model.teacher",
                    f"[{teacher}]",
                ),
            ]
        )
    assert str(refused.value) == f"--model.teacher {teacher}: the model's classes are {FOUR}, the data's are {SEVEN}"
    experiment = client.get_experiment_by_name("labels-student")
    assert experiment is None or not client.search_runs([experiment.experiment_id])


def test_comparing_runs_of_other_classes_is_refused(four, seven, tracking_uri):
    _, _, four_run = four
    _, _, seven_run = seven
    with pytest.raises(UserError, match="the runs predict different classes"):
        report.main(["--compare", four_run.info.run_id, seven_run.info.run_id])


def test_no_shipped_config_names_carer_s_classes():
    for path in SHIPPED_TRAINING_CONFIGS:
        assert "labels" not in ((yaml.safe_load(path.read_text()) or {}).get("data") or {}), path


def test_the_offline_config_fits_carer_with_the_hub_s_ids(data_dir, tiny_model_dir, tmp_path):
    cli = EmoCLI(args=shrunk_args(tmp_path, tiny_model_dir, data_dir), run=False)
    assert list(cli.datamodule.label_names) == list(cli.model.hparams.label_names) == list(CARER_LABELS)
    assert cli.model.model.config.id2label == dict(enumerate(CARER_LABELS))
    readme = DATA_DIR / "README.md"  # the data's card, where the copy comes with one: "sadness 0, joy 1, ..."
    if readme.is_file():
        line = next(line for line in readme.read_text().splitlines() if line.startswith("Label ids as on the Hub:"))
        pairs = [pair.split() for pair in line.removeprefix("Label ids as on the Hub:").rstrip(".").split(",")]
        assert [name for name, _ in sorted(pairs, key=lambda pair: int(pair[1]))] == list(CARER_LABELS)
