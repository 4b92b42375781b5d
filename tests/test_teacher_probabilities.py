"""A teacher's probabilities (emo.distill.teacher_probabilities), through its public behaviour against a real MLflow
server: each text gets its own row although the teacher runs in length-sorted batches, and the cache is read only for
the same teacher version, maximum length and data. (The distillation end to end: test_distill.py.)"""

import mlflow
import torch

from emo import distill, hardware
from emo.store import log_transformers_model

CARER = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def register_teacher(tiny_model_dir, name: str, seed: int):
    """A tiny teacher whose probabilities tell the texts apart, logged and registered as a new version of NAME that
    takes the alias champion; returns it, to compute its probabilities text by text. The tiny model's own weights (std
    0.02) give every text nearly the same probabilities; redrawn at 0.2, the nearest other text is ~0.03 away in L1 (at
    least 0.002 on the data of these tests) against a padding error of 1e-6 in full precision."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir,
        num_labels=6,
        id2label=dict(enumerate(CARER)),
        label2id={label: i for i, label in enumerate(CARER)},
    )
    with torch.no_grad():
        for weight in (parameter for parameter in model.bert.parameters() if parameter.dim() > 1):
            weight.normal_(0, 0.2)
        model.classifier.weight.normal_(0, 1.0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("teachers") or client.get_experiment(
        client.create_experiment("teachers")
    )
    run = client.create_run(experiment.experiment_id)
    version = mlflow.register_model(log_transformers_model(run.info.run_id, model, tokenizer), name)
    client.set_terminated(run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return model.eval(), tokenizer


@torch.inference_mode()
def one_by_one(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    rows = [
        model(**tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")).logits.softmax(-1)
        for text in texts
    ]
    return torch.cat(rows)


def assert_row_by_row(probabilities: torch.Tensor, expected: torch.Tensor) -> None:
    """Row i is text i's: nearest to what the teacher gives text i alone, and close to it."""
    nearest = torch.cdist(probabilities.float(), expected.float(), p=1).argmin(dim=1)
    assert nearest.tolist() == list(range(len(expected)))
    assert torch.allclose(probabilities.float(), expected.float(), atol=1e-4)


def test_each_text_gets_its_own_row_and_the_cache_misses_on_a_new_version_length_or_data(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch, capsys
):
    monkeypatch.setenv("EMO_CACHE_DIR", str(tmp_path / "cache"))
    # In full precision, where a CPU has bf16 units too: bf16 rounding (~0.1 in L1 on this random teacher) would blur
    # which row is whose; the order and the cache are what is tested here.
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    lines = (small_data_dir / "train.txt").read_text().splitlines()
    texts = list(dict.fromkeys(line.rsplit(";", 1)[0] for line in lines))[:150]  # lengths vary: 3 sorted batches of 64
    first = register_teacher(tiny_model_dir, "order-teacher", seed=1)
    uri = "models:/order-teacher@champion"

    def teacher(max_length: int, digest: str = "data-1") -> tuple[torch.Tensor, str]:
        probabilities, _, _ = distill.teacher_probabilities([uri], texts, digest, max_length, tracking_uri)
        return probabilities, capsys.readouterr().err

    computed, err = teacher(64)
    assert "computing the probabilities of teacher models:/order-teacher@champion (models:/order-teacher/1)" in err
    assert_row_by_row(computed, one_by_one(*first, texts, 64))
    cached, err = teacher(64)
    assert "from the cache" in err and torch.equal(cached, computed)

    shorter, err = teacher(8)  # truncated otherwise: not the cached probabilities
    assert "computing" in err and "from the cache" not in err
    assert_row_by_row(shorter, one_by_one(*first, texts, 8))
    _, err = teacher(64, digest="data-2")  # other training examples
    assert "computing" in err and "from the cache" not in err

    second = register_teacher(tiny_model_dir, "order-teacher", seed=2)  # version 2 takes the alias
    newer, err = teacher(64)
    assert "(models:/order-teacher/2)" in err and "from the cache" not in err
    assert_row_by_row(newer, one_by_one(*second, texts, 64))
