import lightning as L
import pytest
import torch

from emo import UserError
from emo.data import EmotionDataModule
from emo.data.fetch import CARER_LABELS
from emo.hardware import CpuDropout, use_cpu_kernels
from emo.losses import class_weights
from emo.model import EmotionClassifier, evaluation_metrics
from emo.optim import (
    DEFAULT_LR_SCHEDULER,
    LinearWarmupDecay,
    as_callable,
    build_optimizer,
    build_scheduler,
    parameter_groups,
)


def logits_for(predictions: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predictions), len(CARER_LABELS)).float()


def test_metrics_on_a_known_confusion():
    # 10 examples: sadness 4 (3 right, 1 -> joy), joy 4 (all right), love 2 (1 right, 1 -> joy).
    target = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    predicted = [0, 0, 0, 1, 1, 1, 1, 1, 2, 1]
    metrics = evaluation_metrics(CARER_LABELS, "val")
    metrics.update(logits_for(predicted), torch.tensor(target))
    values = {k: v.item() for k, v in metrics.compute().items()}
    f1 = {"sadness": 2 * 3 / (2 * 3 + 1), "joy": 2 * 4 / (2 * 4 + 2), "love": 2 * 1 / (2 * 1 + 1)}
    assert values["val/acc"] == pytest.approx(0.8)
    assert values["val/f1_sadness"] == pytest.approx(f1["sadness"])
    assert values["val/f1_joy"] == pytest.approx(f1["joy"])
    assert values["val/precision_joy"] == pytest.approx(4 / 6)
    assert values["val/recall_love"] == pytest.approx(0.5)
    assert values["val/f1_weighted"] == pytest.approx((4 * f1["sadness"] + 4 * f1["joy"] + 2 * f1["love"]) / 10)
    # Like scikit-learn, the macro average leaves out classes absent from both targets and predictions.
    assert values["val/f1_macro"] == pytest.approx(sum(f1.values()) / 3)


ADAMW = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3, "weight_decay": 0.1}}
WARMUP = {"class_path": "emo.optim.LinearWarmupDecay", "init_args": {"warmup_ratio": 0.25}}


@pytest.fixture(scope="module")
def classifier(tiny_model_dir):
    return EmotionClassifier(
        str(tiny_model_dir), CARER_LABELS, optimizer=as_callable(ADAMW), lr_scheduler=as_callable(WARMUP)
    )


def test_head_has_the_label_mapping(classifier):
    config = classifier.model.config
    assert config.num_labels == 6
    assert config.id2label == dict(enumerate(CARER_LABELS))
    assert config.label2id["surprise"] == 5


def built(model, layer_lr_decay: float = 1.0, optimizer: dict = ADAMW):
    """The optimizer emo builds for `model`: (learning rate, weight decay, parameter names) of each group."""
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = build_optimizer(as_callable(optimizer), parameter_groups(model, layer_lr_decay), "cpu")
    return optimizer, [
        (g["lr"], g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in optimizer.param_groups
    ]


def test_no_weight_decay_on_biases_and_layernorm(classifier):
    optimizer, groups = built(classifier.model)
    decayed = [n for lr, wd, names in groups if wd == 0.1 for n in names]
    undecayed = [n for lr, wd, names in groups if wd == 0.0 for n in names]
    assert {lr for lr, _, _ in groups} == {1e-3}  # no layer decay: one learning rate
    assert all(n.endswith("weight") and "LayerNorm" not in n for n in decayed)
    assert all(n.endswith("bias") or "LayerNorm" in n for n in undecayed)
    assert "classifier.weight" in decayed and "bert.embeddings.LayerNorm.weight" in undecayed
    assert len(decayed) + len(undecayed) == len(list(classifier.model.parameters()))
    assert optimizer.defaults["fused"] is True  # left unset: emo's choice on a CPU


def test_layer_lr_decay_slows_the_lower_layers(classifier):
    model = classifier.model  # 2 layers: embeddings at depth 0, layers at 1 and 2, pooler and head at 3
    rate = {n: lr for lr, _, names in built(model, 0.5)[1] for n in names}
    assert rate["classifier.weight"] == rate["bert.pooler.dense.bias"] == pytest.approx(1e-3)
    assert rate["bert.encoder.layer.1.output.dense.weight"] == pytest.approx(5e-4)
    assert rate["bert.encoder.layer.0.attention.self.query.bias"] == pytest.approx(2.5e-4)
    assert rate["bert.embeddings.LayerNorm.weight"] == pytest.approx(1.25e-4)
    assert len(rate) == len(list(model.parameters()))


def test_any_optimizer_takes_emo_s_parameter_groups(classifier):
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}}
    optimizer, groups = built(classifier.model, 0.5, sgd)
    assert type(optimizer).__name__ == "SGD" and optimizer.defaults["momentum"] == 0.9
    rate = {n: lr for lr, _, names in groups for n in names}
    assert rate["classifier.weight"] == pytest.approx(0.05) and rate["bert.embeddings.LayerNorm.weight"] == 0.05 / 8
    assert {wd for _, wd, _ in groups} == {0.1, 0.0}


def test_layer_decay_of_an_encoder_whose_layers_emo_does_not_know_is_one_line(classifier):
    class Renamed(torch.nn.Module):  # the same layers under another name (T5's `block.<i>`, GPT's `h.<i>`)
        def __init__(self, model):
            super().__init__()
            self.config, self.blocks = model.config, torch.nn.ModuleList(model.bert.encoder.layer)

    with pytest.raises(UserError, match="emo does not know the layers of Renamed"):
        parameter_groups(Renamed(classifier.model), 0.5)
    assert parameter_groups(Renamed(classifier.model), 1.0)  # without layer decay the names do not matter


def test_the_default_schedule_is_transformers_linear_warmup_then_decay():
    from transformers import get_linear_schedule_with_warmup

    for ratio, total in ((0.0, 7), (0.1, 100), (0.25, 8), (1.0, 5)):
        ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule = build_scheduler(
            as_callable(DEFAULT_LR_SCHEDULER | {"init_args": {"warmup_ratio": ratio}}), ours, total
        )
        reference = get_linear_schedule_with_warmup(theirs, round(ratio * total), total)
        assert isinstance(schedule, LinearWarmupDecay)
        for _ in range(total + 2):
            assert ours.param_groups[0]["lr"] == theirs.param_groups[0]["lr"]
            ours.step(), theirs.step(), schedule.step(), reference.step()


def test_class_balance_weighs_rare_classes_up():
    labels = [0] * 6 + [1] * 3 + [2] * 1
    assert class_weights(labels, 3, 0.0).tolist() == [1.0, 1.0, 1.0]
    balanced = class_weights(labels, 3, 1.0)
    assert balanced.tolist() == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert (balanced * torch.tensor([6.0, 3.0, 1.0])).tolist() == pytest.approx([10 / 3] * 3)  # equal total weight
    assert class_weights(labels, 3, 0.5).tolist() == pytest.approx((balanced**0.5).tolist())


def test_training_loss_smooths_and_weighs(tiny_model_dir):
    logits, labels = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0]]), torch.tensor([0])
    plain = EmotionClassifier(str(tiny_model_dir), CARER_LABELS).loss(logits, labels)
    assert plain == pytest.approx(torch.nn.functional.cross_entropy(logits, labels))
    smoothed = EmotionClassifier(str(tiny_model_dir), CARER_LABELS, label_smoothing=0.1).loss(logits, labels)
    assert smoothed > plain  # a confident right answer costs more when the target is not one-hot


def train_steps(model, data_dir, tokenizer_dir, steps: int, **settings) -> L.Trainer:
    """A bare trainer (no logger, checkpoints, bars or validation) that trains `model` `steps` steps on `data_dir`."""
    data = EmotionDataModule(data_dir=str(data_dir), tokenizer_name_or_path=str(tokenizer_dir))
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "limit_val_batches": 0}
    trainer = L.Trainer(max_steps=steps, **quiet, **settings)
    trainer.fit(model, datamodule=data)
    return trainer


def test_linear_warmup_then_decay(classifier, small_data_dir, tiny_model_dir):
    class RecordLearningRate(L.Callback):
        rates = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    recorder = RecordLearningRate()
    trainer = train_steps(classifier, small_data_dir, tiny_model_dir, 8, callbacks=[recorder])
    rates = recorder.rates
    assert len(rates) == 8 and {group["weight_decay"] for group in trainer.optimizers[0].param_groups} == {0.1, 0.0}
    assert rates[0] == 0.0 and rates[2] == pytest.approx(1e-3)  # 2 warm-up steps (25 % of 8)
    assert rates[2] > rates[5] > rates[7] > 0


def test_predict_step_gives_probabilities(classifier, tiny_model_dir):
    from transformers import AutoTokenizer

    batch = dict(
        AutoTokenizer.from_pretrained(tiny_model_dir)(["i am glad", "so sad"], padding=True, return_tensors="pt")
    )
    probabilities = classifier.predict_step(batch, 0)
    assert probabilities.shape == (2, 6)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2))


def test_frozen_embeddings_stay_as_pretrained_and_the_rest_trains(small_data_dir, tiny_model_dir):
    fast = as_callable({"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}})
    model = EmotionClassifier(str(tiny_model_dir), CARER_LABELS, optimizer=fast, freeze_embeddings=True)
    embeddings = model.model.get_input_embeddings().weight.detach().clone()
    head = model.model.classifier.weight.detach().clone()
    trainer = train_steps(model, small_data_dir, tiny_model_dir, 3)
    assert torch.equal(model.model.get_input_embeddings().weight, embeddings)
    assert not torch.equal(model.model.classifier.weight, head)
    trained = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert id(model.model.get_input_embeddings().weight) not in trained


def test_dropout_setting_reaches_every_dropout_layer(tiny_model_dir):
    model = EmotionClassifier(str(tiny_model_dir), CARER_LABELS, dropout=0.0)
    layers = [m for m in model.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert layers and all(layer.p == 0.0 for layer in layers)
    assert {
        m.p
        for m in EmotionClassifier(str(tiny_model_dir), CARER_LABELS).model.modules()
        if isinstance(m, torch.nn.Dropout)
    } == {0.1}


def test_a_cpu_fit_draws_dropout_masks_the_fast_way_with_the_same_rate(small_data_dir, tiny_model_dir):
    model = EmotionClassifier(str(tiny_model_dir), CARER_LABELS)
    train_steps(model, small_data_dir, tiny_model_dir, 1, accelerator="cpu")
    layers = [m for m in model.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert layers and all(isinstance(m, CpuDropout) and m.p == 0.1 for m in layers)
    assert model.model.config._attn_implementation == "emo_cpu"
    dropout = CpuDropout(0.1).train()
    x = torch.ones(400, 1000)
    out = dropout(x)
    assert (out == 0).float().mean().item() == pytest.approx(0.1, abs=0.003)  # 400,000 draws: 0.1 +- 0.0005 (1 sd)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)  # kept values scaled by 1 / (1 - p)
    torch.manual_seed(7)
    first = dropout(x)
    torch.manual_seed(7)
    assert torch.equal(dropout(x), first)  # seeded like torch's own dropout
    assert torch.equal(dropout.eval()(x), x)


def test_attention_kernel_is_a_setting(tiny_model_dir):
    assert (
        EmotionClassifier(
            str(tiny_model_dir), CARER_LABELS, attn_implementation="eager"
        ).model.config._attn_implementation
        == "eager"
    )


def test_cpu_attention_computes_what_sdpa_computes(tiny_model_dir):
    reference = EmotionClassifier(str(tiny_model_dir), CARER_LABELS).model.eval()
    swapped = EmotionClassifier(str(tiny_model_dir), CARER_LABELS).model.eval()
    swapped.load_state_dict(reference.state_dict())
    use_cpu_kernels(swapped, attention=True)
    assert swapped.config._attn_implementation == "emo_cpu"
    ids = torch.randint(1000, 20000, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # padding must be masked out the same way
    with torch.no_grad():
        assert torch.allclose(
            swapped(input_ids=ids, attention_mask=mask).logits,
            reference(input_ids=ids, attention_mask=mask).logits,
            atol=1e-5,
        )


def test_a_chosen_attention_kernel_is_kept_on_the_cpu(small_data_dir, tiny_model_dir):
    model = EmotionClassifier(str(tiny_model_dir), CARER_LABELS, attn_implementation="sdpa")
    train_steps(model, small_data_dir, tiny_model_dir, 1, accelerator="cpu")
    assert model.model.config._attn_implementation == "sdpa"
