"""The classifier: a Hugging Face encoder with a classification head, fine-tuned with AdamW."""

import contextlib
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import transformers
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveFloat, restricted_number_type
from torch import nn
from torch.nn import functional as F
from torchmetrics import MetricCollection, classification
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.wrappers import ClasswiseWrapper
from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import get_parameter_names

from emo import UserError, hub, spec
from emo.distill import distillation_loss, teacher_probabilities
from emo.hardware import use_cpu_kernels
from emo.spec import LABELS, LOSS, STAGE_SPLITS, TRAIN_LOSS, TRAIN_LR
from emo.store import resolve_tracking_uri

EVAL_STAGES = tuple(STAGE_SPLITS)
VAL_PREDICTIONS_KEY = "val_predictions"  # in a checkpoint: the predictions of the validation that scored it
LayerDecay = restricted_number_type("LayerDecay", float, [(">", 0), ("<=", 1)])  # 1: one learning rate for all layers
# Parameters that get no weight decay, as in transformers' Trainer: biases and normalisation weights.
NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"layer_norm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def evaluation_metrics(label_names: Sequence[str], stage: str) -> MetricCollection:
    """The torchmetrics of `emo.spec.METRICS`, logged as `{stage}/<key>` (per class `{stage}/<key>_<label>`)."""
    n, labels = len(label_names), list(label_names)
    metrics = {}
    for metric in spec.METRICS:
        built = getattr(classification, metric.torchmetric)(n, **dict(metric.options))
        metrics[metric.key] = ClasswiseWrapper(built, labels=labels, prefix=f"{metric.key}_") if metric.per_class else built
    # Shared states confuse the class-wise wrappers' bookkeeping.
    return MetricCollection(metrics, prefix=f"{stage}/", compute_groups=False)


class TrainingDiverged(UserError):
    """The loss is no longer a number: the run stops and is recorded as FAILED."""


@contextlib.contextmanager
def transformers_errors_only():
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(previous)


def load_classifier(name: str, label_names: Sequence[str], attn_implementation: str | None = None) -> nn.Module:
    """The pretrained encoder with a new classification head.

    transformers reports the new head's weights as missing from the checkpoint, which is the
    point of fine-tuning; only weights missing from the encoder itself are worth a warning.
    """
    with transformers_errors_only():
        model, loading = hub.from_pretrained(
            AutoModelForSequenceClassification,
            name,
            what="model",
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={label: i for i, label in enumerate(label_names)},
            output_loading_info=True,
            **({"attn_implementation": attn_implementation} if attn_implementation else {}),
        )
    encoder = model.base_model_prefix + "."
    missing = [key for key in loading["missing_keys"] if key.startswith(encoder)]
    if missing:
        warnings.warn(f"model {name!r}: {len(missing)} encoder weights are not in its checkpoint and start random "
                      f"({', '.join(missing[:3])}, ...)", stacklevel=2)  # fmt: skip
    return model


def layer_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for transformer layer i, num_layers + 1 for what sits on top (pooler, head)."""
    if "embeddings" in name:
        return 0
    layer = re.search(r"\.layers?\.(\d+)\.", name)
    return int(layer.group(1)) + 1 if layer else num_layers + 1


def parameter_groups(model: nn.Module, learning_rate: float, weight_decay: float, layer_lr_decay: float = 1.0) -> list[dict]:
    """AdamW groups: no weight decay for biases and norms; with `layer_lr_decay` < 1, lower layers learn slower
    (the head at `learning_rate`, the layer below at `learning_rate * layer_lr_decay`, and so on down)."""
    decayed = set(get_parameter_names(model, [nn.LayerNorm], NO_DECAY_PATTERNS))
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth, decays = layer_depth(name, num_layers), name in decayed
        group = groups.setdefault((depth, decays), {
            "params": [],
            "weight_decay": weight_decay if decays else 0.0,
            "lr": learning_rate * layer_lr_decay ** (num_layers + 1 - depth),
        })  # fmt: skip
        group["params"].append(parameter)
    return list(groups.values())


def class_weights(labels: Sequence[int], num_classes: int, power: float) -> torch.Tensor:
    """(n / (k * n_c)) ** power: 0 weighs every example alike, 1 gives every class the same total weight."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).float().clamp(min=1)
    return (counts.sum() / (num_classes * counts)) ** power


class EmotionClassifier(L.LightningModule):
    """`AutoModelForSequenceClassification` with torchmetrics evaluation.

    Args:
        model_name_or_path: Hub id or local folder of a pretrained encoder.
        label_names: Class names in id order; linked from the data module by the CLI.
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_ratio: Share of the training steps with a linear warm-up; then linear decay to 0.
        adam_epsilon: AdamW epsilon.
        freeze_embeddings: Keep the word embeddings as pretrained. They are a third to a half of a
            small encoder's weights and the optimizer updates every weight at every step, so
            freezing them makes a step faster.
        dropout: Sets every dropout probability of the model (hidden, attention, head) to this value;
            `null` keeps the pretrained model's own.
        attn_implementation: transformers' attention kernel (`sdpa`, `eager`, ...). `null`: emo's
            `cpu_attention` when fitting on a CPU (emo.hardware), else transformers' choice (sdpa).
        label_smoothing: Training loss target: 1 - label_smoothing on the true class, the rest spread evenly.
        class_balance: Training loss weight of a class, (n / (k * n_class)) ** class_balance from the train
            split's counts: 0 weighs every example alike, 1 gives the rare classes (love, surprise) as much
            total weight as the common ones. Validation and test losses stay unweighted.
        layer_lr_decay: Layer-wise learning-rate decay: each layer below the head learns at this factor
            of the layer above it (1: one learning rate for all).
        teacher: Distil from these logged models (`models:/NAME@ALIAS`, `models:/NAME/VERSION` or run ids): their
            mean class probabilities on the training texts, computed once and cached (emo.distill).
        distill_alpha: With a teacher, the training loss is (1 - alpha) x cross-entropy on the labels + alpha x
            T² x KL divergence to the teacher at temperature T; 0 is plain cross-entropy.
        distill_temperature: T, which softens both distributions: the teacher's second choices weigh more.
    """

    def __init__(
        self,
        model_name_or_path: str = "distilbert-base-uncased",
        label_names: Sequence[str] = LABELS,
        learning_rate: PositiveFloat = 2e-5,
        weight_decay: NonNegativeFloat = 0.01,
        warmup_ratio: ClosedUnitInterval = 0.0,
        adam_epsilon: PositiveFloat = 1e-8,
        freeze_embeddings: bool = False,
        dropout: ClosedUnitInterval | None = None,
        attn_implementation: str | None = None,
        label_smoothing: ClosedUnitInterval = 0.0,
        class_balance: ClosedUnitInterval = 0.0,
        layer_lr_decay: LayerDecay = 1.0,
        teacher: list[str] | None = None,
        distill_alpha: ClosedUnitInterval = 0.5,
        distill_temperature: PositiveFloat = 2.0,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # every setting reaches MLflow from the resolved config instead
        self.model = load_classifier(model_name_or_path, label_names, attn_implementation)
        self.model.train()  # from_pretrained returns eval mode, and Lightning keeps a module's mode: dropout on
        if freeze_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)
        if dropout is not None:
            for module in self.model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = dropout  # attention layers read their dropout module's p too
        self.metrics = nn.ModuleDict({stage: evaluation_metrics(label_names, stage) for stage in EVAL_STAGES})
        self.confusion = nn.ModuleDict({stage: MulticlassConfusionMatrix(len(label_names)) for stage in EVAL_STAGES})
        self.confusion_matrices: dict[str, torch.Tensor] = {}  # of the last evaluation, for the run's artifacts
        self.eval_outputs: dict[str, list[tuple[torch.Tensor, ...]]] = {stage: [] for stage in EVAL_STAGES}  # per batch
        # {stage: example, label, probabilities} of the last evaluation; a checkpoint keeps the validation's that chose it
        self.predictions: dict[str, dict[str, torch.Tensor]] = {}
        self.loss_weights: torch.Tensor | None = None  # per class, from the train split at fit time
        self.teacher_probabilities: torch.Tensor | None = None  # per training example, computed at fit time
        self.teacher_sources: list = []  # the teachers as found in MLflow
        self.teacher_cache: Path | None = None  # the cache file of their probabilities

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        if self.trainer.strategy.root_device.type == "cpu":
            # The same dropout with masks drawn faster, and plain attention unless one was chosen (emo.hardware).
            use_cpu_kernels(self.model, attention=self.hparams.attn_implementation is None)
        if self.hparams.class_balance > 0:
            labels = self.trainer.datamodule.splits["train"]["label"]
            self.loss_weights = class_weights(labels, len(self.hparams.label_names), self.hparams.class_balance)
        if self.hparams.teacher:
            datamodule = self.trainer.datamodule
            tracking_uri = getattr(self.trainer.logger, "tracking_uri", None) or resolve_tracking_uri()
            self.teacher_probabilities, self.teacher_cache, self.teacher_sources = teacher_probabilities(
                self.hparams.teacher, list(datamodule.splits["train"]["text"]), datamodule.digests["train"],
                datamodule.hparams.max_length, tracking_uri,
            )  # fmt: skip

    def training_loss(self, logits: torch.Tensor, labels: torch.Tensor, examples: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy on the labels (weighted by class, smoothed); with a teacher, mixed with the distillation loss."""
        weights = None if self.loss_weights is None else self.loss_weights.to(logits.device)
        loss = F.cross_entropy(logits.float(), labels, weight=weights, label_smoothing=self.hparams.label_smoothing)
        alpha = self.hparams.distill_alpha
        if self.teacher_probabilities is None or alpha == 0:
            return loss
        teacher = self.teacher_probabilities[examples.cpu()].to(logits.device)
        return (1 - alpha) * loss + alpha * distillation_loss(logits, teacher, self.hparams.distill_temperature)

    def shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        labels = batch.pop("labels")
        examples = batch.pop("example", None)
        logits = self.model(**batch).logits
        if stage == "train":
            loss = self.training_loss(logits, labels, examples)
            self.log(TRAIN_LOSS, loss, prog_bar=True)
            self.log(TRAIN_LR, self.lr_schedulers().get_last_lr()[-1])  # the head's: the peak under layer decay
            return loss
        loss = F.cross_entropy(logits.float(), labels)  # plain, whatever the training loss: comparable across runs
        self.log(f"{stage}/{LOSS}", loss, on_epoch=True, sync_dist=True, batch_size=len(labels))
        self.metrics[stage].update(logits, labels)
        self.confusion[stage].update(logits, labels)
        if examples is not None:
            self.eval_outputs[stage].append((examples, labels, logits.float().softmax(dim=-1)))
        return loss

    def on_validation_epoch_start(self):
        self.eval_outputs["val"] = []

    def on_test_epoch_start(self):
        self.eval_outputs["test"] = []

    def gather_predictions(self, stage: str) -> dict[str, torch.Tensor]:
        """Example line, true label and class probabilities of every example of the split, from all processes."""
        columns = [torch.cat(column) for column in zip(*self.eval_outputs[stage], strict=True)]
        if self.trainer.world_size > 1:  # the sampler pads with repeats: keep each example once
            columns = [self.all_gather(column).flatten(0, 1) for column in columns]
        examples, labels, probabilities = (column.cpu() for column in columns)
        order = torch.argsort(examples)
        keep = torch.ones_like(order, dtype=torch.bool)
        keep[1:] = examples[order][1:] != examples[order][:-1]
        order = order[keep]
        return {"example": examples[order], "label": labels[order], "probabilities": probabilities[order]}

    def log_evaluation(self, stage: str) -> None:
        # compute() gathers the states of all processes: the metrics cover the whole split.
        values = self.metrics[stage].compute()
        shown = {name: values.pop(name) for name in [f"{stage}/{m.key}" for m in spec.METRICS if m.progress_bar]}
        self.log_dict(shown, prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)
        self.confusion_matrices[stage] = self.confusion[stage].compute().cpu()
        self.metrics[stage].reset()
        self.confusion[stage].reset()

    def training_step(self, batch, batch_idx):
        loss = self.shared_step(batch, "train")
        if self.checks_loss_now() and not torch.isfinite(loss):  # every later step would be NaN too: stop, with the reason
            raise TrainingDiverged(
                f"the training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                f"lower --model.learning_rate (now {self.hparams.learning_rate:g}) or check the data"
            )
        return loss

    def checks_loss_now(self) -> bool:
        """Every step on a CPU; on an accelerator only where Lightning logs anyway, as reading a value waits for the device."""
        return self.device.type == "cpu" or self.global_step % max(self.trainer.log_every_n_steps, 1) == 0

    def validation_step(self, batch, batch_idx):
        self.shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self.shared_step(batch, "test")

    def on_validation_epoch_end(self):
        self.log_evaluation("val")
        self.keep_predictions("val")

    def on_test_epoch_end(self):
        self.log_evaluation("test")
        self.keep_predictions("test")

    def keep_predictions(self, stage: str) -> None:
        if self.eval_outputs[stage] and not self.trainer.sanity_checking:
            self.predictions[stage] = self.gather_predictions(stage)
        self.eval_outputs[stage] = []

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A checkpoint is saved right after the validation that scored it: its predictions travel with it, so
        # the run can log the validation predictions of the checkpoint it keeps (for `emo report --compare_split val`).
        if "val" in self.predictions:
            checkpoint[VAL_PREDICTIONS_KEY] = self.predictions["val"]

    def predict_step(self, batch, batch_idx):
        batch.pop("labels", None)
        return self.model(**batch).logits.float().softmax(dim=-1)  # probabilities in fp32, also under bf16 autocast

    def configure_optimizers(self):
        hp = self.hparams
        # The fused kernel: on a CPU its step takes a fifth of the default's (0.03 s vs 0.16 s for MiniLM).
        fused = self.device.type in ("cpu", "cuda")
        groups = parameter_groups(self.model, hp.learning_rate, hp.weight_decay, hp.layer_lr_decay)
        optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate, eps=hp.adam_epsilon, fused=fused)
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = get_linear_schedule_with_warmup(optimizer, round(hp.warmup_ratio * total_steps), total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
