"""Distillation end to end against a real MLflow server: a tiny teacher fitted and registered, a student taught by it
(probabilities computed once, cached, logged; the run and the registered version name the teacher)."""

import subprocess
import sys

import mlflow
import pytest
import torch
from torch.nn import functional as F

from emo.fit import EmoCLI
from emo.losses import TrainingLoss, distillation_loss
from emo.spec import TEACHER_ARTIFACT
from helpers.data import ROOT, SMALL_SIZES, one_epoch_named, shrunk_args

CARER = ["sadness", "joy", "love", "anger", "fear", "surprise"]  # the ids a teacher's classes must have


def fit(tmp_path, tiny_model_dir, small_data_dir, name: str, *extra: str) -> EmoCLI:
    return EmoCLI(
        args=[
            "fit",
            *shrunk_args(
                tmp_path,
                tiny_model_dir,
                small_data_dir,
                *one_epoch_named("distill-test", name),
                *extra,
            ),
        ]
    )


def test_a_student_learns_from_a_registered_teacher_computed_once(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch, capsys
):
    monkeypatch.setenv("EMO_CACHE_DIR", str(tmp_path / "cache"))
    teacher = fit(tmp_path / "teacher", tiny_model_dir, small_data_dir, "tiny-teacher", "--optimizer.lr", "5e-3")
    capsys.readouterr()
    uri = "models:/tiny-teacher@champion"
    student = fit(
        tmp_path / "student",
        tiny_model_dir,
        small_data_dir,
        "tiny-student",
        "--model.teacher",
        f"[{uri}]",
        "--model.distill_alpha",
        "0.7",
        "--model.distill_temperature",
        "3",
    )
    assert (
        "computing the probabilities of teacher models:/tiny-teacher@champion (models:/tiny-teacher/1)"
        in capsys.readouterr().err
    )
    client = mlflow.MlflowClient()
    run = client.get_run(student.trainer.logger.run_id)
    tags = run.data.tags
    assert tags["emo.teacher"] == uri and tags["emo.teacher_versions"] == "models:/tiny-teacher/1"
    assert tags["emo.teacher_run_ids"] == teacher.trainer.logger.run_id
    assert run.data.params["model.teacher.0"] == uri and run.data.params["model.distill_alpha"] == "0.7"
    logged = torch.load(client.download_artifacts(run.info.run_id, TEACHER_ARTIFACT, str(tmp_path)), weights_only=True)
    assert logged.shape == (SMALL_SIZES["train"], 6) and torch.allclose(logged.sum(dim=1), torch.ones(len(logged)))
    assert torch.equal(logged, student.model.loss.teacher)
    version = client.search_model_versions("name='tiny-student'")[0]
    assert f"Distilled from {uri}." in version.description

    again = fit(
        tmp_path / "again", tiny_model_dir, small_data_dir, "tiny-student", "--model.teacher", uri
    )  # one: plain
    err = capsys.readouterr().err
    assert "teacher probabilities from the cache" in err and "computing" not in err
    assert torch.equal(again.model.loss.teacher, logged)

    table = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.teacher_table",
            f"solo={uri}",
            f"twice={uri},{uri}",
            "--data_dir",
            str(small_data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert table.returncode == 0, table.stderr
    rows = [line.split(" | ") for line in table.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == [f"| {uri}", "| solo", "| twice"]
    # a group of one teacher, or of the same one twice, is that teacher
    assert rows[0][1:] == rows[1][1:] == rows[2][1:] and len(rows[0]) == 7
    # and its test scores are those its own fit logged on the same test split (one example of 100 apart at most: the
    # table runs the teacher in the precision emo's teachers run in)
    table_test = [float(cell.strip(" |")) for cell in rows[0][4:7]]
    logged = client.get_run(teacher.trainer.logger.run_id).data.metrics
    assert table_test == pytest.approx(
        [logged["test/acc"], logged["test/f1_weighted"], logged["test/f1_macro"]], abs=0.02
    )


def test_the_loss_is_plain_cross_entropy_at_alpha_zero_and_the_kl_at_one():
    logits, labels = torch.randn(8, 6), torch.randint(0, 6, (8,))
    teacher = torch.softmax(torch.randn(8, 6), dim=-1)
    plain = F.cross_entropy(logits, labels)
    for alpha, temperature in ((0.0, 2.0), (1.0, 1.0), (0.5, 4.0)):
        loss = TrainingLoss(distill_alpha=alpha, distill_temperature=temperature, teacher=teacher)(
            logits, labels, torch.arange(8)
        )
        kl = F.kl_div(
            F.log_softmax(logits / temperature, -1), F.softmax(teacher.log() / temperature, -1), reduction="batchmean"
        )
        assert loss == pytest.approx(float((1 - alpha) * plain + alpha * temperature**2 * kl), rel=1e-5)
    assert distillation_loss(teacher.log(), teacher, 1.0) == pytest.approx(0.0, abs=1e-6)  # the teacher itself
