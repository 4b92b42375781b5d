"""The champion on validation, against a real MLflow server: the alias follows the validation metric at each version's
kept checkpoint, paired by bootstrap where both were validated on the same examples, never the test split."""

import mlflow
import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss

from emo.analysis import predictions_frame
from emo.data.fetch import CARER_LABELS
from emo.selection import Evidence, best_index, challenge
from emo.spec import KEPT_STEP_TAG, VALIDATION_DIGEST_TAG, predictions_artifact
from emo.store import register
from emo.store.registry import log_transformers_model, tracking_store

NAME = "registry-test"
N = 600  # validation examples
KEPT = 40  # the kept checkpoint's step; the last validation, at a later step, scored otherwise


@pytest.fixture(scope="module")
def model(tiny_model_dir, mlflow_server):
    """A text-classification model (the tiny BERT) and its tokenizer, which each run below logs as its own."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    mlflow.MlflowClient(mlflow_server).create_experiment("registry-test")
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=len(CARER_LABELS))
    return classifier, AutoTokenizer.from_pretrained(tiny_model_dir)


def predictions(right: float, seed: int, truth_seed: int = 0) -> tuple:
    """Validation predictions right on about `right` of N examples (the same truth for every `truth_seed`)."""
    truth = np.random.default_rng(truth_seed).integers(0, len(CARER_LABELS), N)
    generator = np.random.default_rng(seed)
    predicted = np.where(generator.random(N) < right, truth, (truth + generator.integers(1, 6, N)) % 6)
    probabilities = np.full((N, len(CARER_LABELS)), 0.04)
    probabilities[np.arange(N), predicted] = 0.8
    frame = predictions_frame([f"text {i}" for i in range(N)], truth, probabilities, CARER_LABELS, range(N))
    scores = {
        "val/f1_weighted": f1_score(truth, predicted, average="weighted"),
        "val/loss": log_loss(truth, probabilities),
    }
    return frame, scores


def fit_run(model: str, right: float, seed: int, test_f1: float, digest: str = "same-validation", paired: bool = True):
    """A finished fit as emo records it: its kept checkpoint's validation (at step KEPT, a later validation elsewhere),
    its validation predictions, the validation split's digest, a test score, and a logged model."""
    frame, scores = predictions(right, seed)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("registry-test").experiment_id
    run_id = client.create_run(experiment).info.run_id
    for name, value in scores.items():
        client.log_metric(run_id, name, value, step=KEPT)
        client.log_metric(run_id, name, value - 0.05 if name.endswith("f1_weighted") else value + 0.5, step=KEPT + 20)
    client.log_metric(run_id, "test/f1_weighted", test_f1, step=KEPT + 20)
    client.set_tag(run_id, KEPT_STEP_TAG, str(KEPT))
    client.set_tag(run_id, VALIDATION_DIGEST_TAG, digest)
    with tracking_store(client.tracking_uri):
        log_transformers_model(
            run_id,
            *model,
        )  # the run's own model, as a fit logs it
    if paired:
        client.log_text(run_id, frame.to_csv(index=False), predictions_artifact("val"))
    client.set_terminated(run_id)
    return run_id, scores


def champion(name: str) -> str:
    return mlflow.MlflowClient().get_model_version_by_alias(name, "champion").run_id


def test_the_champion_follows_validation_where_test_favours_the_other(model, tracking_uri):
    name = f"{NAME}-follows-validation"
    test_favoured, _ = fit_run(model, right=0.70, seed=1, test_f1=0.95)
    validation_favoured, scores = fit_run(model, right=0.90, seed=2, test_f1=0.80)
    first, promoted = register(test_favoured, name)
    assert promoted and "no champion before it" in mlflow.MlflowClient().get_model_version(name, "1").description
    second, promoted = register(validation_favoured, name)
    assert promoted and champion(name) == validation_favoured
    description = mlflow.MlflowClient().get_model_version(name, second.version).description
    assert f"val/f1_weighted {scores['val/f1_weighted']:.4f} against version 1's" in description
    assert "paired bootstrap interval" in description and "above zero" in description
    assert "Test: " in description  # reported on the version, never compared
    # Back the other way: a model better on test but worse on validation does not take the alias.
    third, promoted = register(fit_run(model, right=0.72, seed=3, test_f1=0.99)[0], name)
    assert not promoted and champion(name) == validation_favoured


def test_a_difference_the_validation_split_cannot_tell_from_chance_moves_nothing(model, tracking_uri):
    name = f"{NAME}-chance"
    holder, _ = fit_run(model, right=0.85, seed=4, test_f1=0.5)
    register(holder, name)
    frames = {seed: predictions(0.85, seed) for seed in range(5, 40)}
    holder_f1 = predictions(0.85, 4)[1]["val/f1_weighted"]
    seed = next(s for s, (_, scores) in frames.items() if 0 < scores["val/f1_weighted"] - holder_f1 < 0.01)
    challenger, scores = fit_run(model, right=0.85, seed=seed, test_f1=0.9)
    assert scores["val/f1_weighted"] > holder_f1  # ahead on the point estimate
    version, promoted = register(challenger, name)
    assert not promoted and champion(name) == holder
    assert "not above zero" in mlflow.MlflowClient().get_model_version(name, version.version).description


def test_runs_validated_on_other_examples_are_compared_as_point_estimates(model, tracking_uri):
    name = f"{NAME}-other-examples"
    register(fit_run(model, right=0.85, seed=6, test_f1=0.5)[0], name)
    challenger, _ = fit_run(model, right=0.86, seed=7, test_f1=0.5, digest="another-validation")
    version, promoted = register(challenger, name)
    description = mlflow.MlflowClient().get_model_version(name, version.version).description
    assert "compared as point estimates (validated on other examples)" in description
    better = predictions(0.86, 7)[1]["val/f1_weighted"] > predictions(0.85, 6)[1]["val/f1_weighted"]
    assert promoted == better and (champion(name) == challenger) == better


def test_a_loss_as_the_champion_metric_crowns_the_lowest(model, tracking_uri):
    name = f"{NAME}-loss"
    register(fit_run(model, right=0.70, seed=8, test_f1=0.9)[0], name, metric="val/loss")
    lower, _ = fit_run(model, right=0.92, seed=9, test_f1=0.1)
    version, promoted = register(lower, name, metric="val/loss")
    assert promoted and champion(name) == lower
    higher, _ = fit_run(model, right=0.60, seed=10, test_f1=0.99)
    assert not register(higher, name, metric="val/loss")[1]


def test_a_test_metric_never_chooses_a_champion(model, tracking_uri):
    run_id, _ = fit_run(model, right=0.9, seed=11, test_f1=0.9)
    with pytest.raises(Exception, match="a champion is chosen on validation"):
        register(run_id, f"{NAME}-test", metric="test/f1_weighted")


def test_the_best_run_is_the_first_best_in_the_metric_s_direction():
    assert best_index([0.5, None, 0.7, 0.7], "val/f1_weighted") == 2
    assert best_index([0.5, None, 0.3, 0.3], "val/loss") == 2
    assert best_index([None, float("nan")], "val/acc") is None
    assert challenge("val/loss", Evidence(0.3), Evidence(0.4)).promoted
    assert not challenge("val/acc", Evidence(0.3), Evidence(0.4)).promoted
