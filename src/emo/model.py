"""The classifier: a Hugging Face encoder with a classification head, fine-tuned by the optimizer and learning-rate
schedule it is given, evaluated with torchmetrics.

Only the model: the loss is `emo.losses`, the parameter groups and emo's default schedule `emo.optim`, the teachers'
targets are prepared by `emo.fit.teachers`, and what a run keeps of an evaluation (predictions, confusion matrices) is
`emo.tracking.EvaluationPredictions`.
"""

import importlib
import logging
import warnings
from collections.abc import Sequence

import lightning as L
import torch
from jsonargparse.typing import ClosedUnitInterval, PositiveFloat, restricted_number_type
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.nn import functional as F
from torchmetrics import MetricCollection, classification
from torchmetrics.wrappers import ClasswiseWrapper
from transformers import AutoModelForSequenceClassification

from emo import UserError, hub, spec
from emo.calibration import classifier_output_layer
from emo.hardware import use_cpu_kernels
from emo.losses import TrainingLoss, class_weights
from emo.optim import (
    DEFAULT_LR_SCHEDULER,
    DEFAULT_OPTIMIZER,
    as_callable,
    build_optimizer,
    build_scheduler,
    parameter_groups,
    plain_callable,
)
from emo.quiet import logger_at
from emo.spec import LOSS, STAGE_SPLITS, TRAIN_LOSS, TRAIN_LR

EVAL_STAGES = tuple(STAGE_SPLITS)
CALIBRATION_KEY = "emo_calibration"  # in a kept checkpoint: the temperature and prediction sets fitted on it
MODEL_INPUTS_EXCLUDE = ("labels", "example")  # batch columns that are not the encoder's inputs
LayerDecay = restricted_number_type("LayerDecay", float, [(">", 0), ("<=", 1)])  # 1: one learning rate for all layers


def evaluation_metrics(label_names: Sequence[str], stage: str) -> MetricCollection:
    """The torchmetrics of `emo.spec.METRICS`, logged as `{stage}/<key>` (per class `{stage}/<key>_<label>`)."""
    n, labels = len(label_names), list(label_names)
    metrics = {}
    for metric in spec.METRICS:
        module, _, name = metric.torchmetric.rpartition(".")
        built = getattr(importlib.import_module(module) if module else classification, name)(n, **dict(metric.options))
        metrics[metric.key] = (
            ClasswiseWrapper(built, labels=labels, prefix=f"{metric.key}_") if metric.per_class else built
        )
    # Shared states confuse the class-wise wrappers' bookkeeping.
    return MetricCollection(metrics, prefix=f"{stage}/", compute_groups=False)


class TrainingDiverged(UserError):
    """The loss is no longer a number: the run stops and is recorded as FAILED."""


def load_classifier(name: str, label_names: Sequence[str], attn_implementation: str | None = None) -> nn.Module:
    """The pretrained encoder with a new classification head.

    transformers reports the new head's weights as missing from the checkpoint, which is the
    point of fine-tuning; only weights missing from the encoder itself are worth a warning.
    """
    with logger_at("transformers", logging.ERROR):
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
        warnings.warn(
            f"model {name!r}: {len(missing)} encoder weights are not in its checkpoint and start random "
            f"({', '.join(missing[:3])}, ...)",
            stacklevel=2,
        )
    return model


class EmotionClassifier(L.LightningModule):
    """`AutoModelForSequenceClassification` with torchmetrics evaluation.

    Args:
        model_name_or_path: Hub id or local folder of a pretrained encoder.
        label_names: Class names in id order; linked from the data module (`data.label_names`) by the CLI.
        optimizer: The optimizer, of the model's parameter groups (`emo.optim.parameter_groups`: no weight decay on
            biases and norms); linked from the `optimizer:` setting by the CLI. `null`: emo's (AdamW, lr 2e-5,
            weight decay 0.01; `emo.optim.DEFAULT_OPTIMIZER`).
        lr_scheduler: The learning-rate schedule, stepped every training step; linked from `lr_scheduler:` by the CLI.
            `null`: emo's linear warm-up then decay (`emo.optim.LinearWarmupDecay`).
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
            of the layer above it (1: one learning rate for all; for encoders whose layers emo knows).
        teacher: Distil from this logged model or these (`models:/NAME@ALIAS`, `models:/NAME/VERSION` or run ids): their
            mean class probabilities on the training texts, computed once and cached (emo.distill), before the fit
            starts (emo.fit.teachers).
        distill_alpha: With a teacher, the training loss is (1 - alpha) x cross-entropy on the labels + alpha x
            T² x KL divergence to the teacher at temperature T; 0 is plain cross-entropy.
        distill_temperature: T, which softens both distributions: the teacher's second choices weigh more.
    """

    def __init__(
        self,
        model_name_or_path: str = "distilbert-base-uncased",
        label_names: Sequence[str] = (),
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        freeze_embeddings: bool = False,
        dropout: ClosedUnitInterval | None = None,
        attn_implementation: str | None = None,
        label_smoothing: ClosedUnitInterval = 0.0,
        class_balance: ClosedUnitInterval = 0.0,
        layer_lr_decay: LayerDecay = 1.0,
        teacher: str | list[str] | None = None,
        distill_alpha: ClosedUnitInterval = 0.5,
        distill_temperature: PositiveFloat = 2.0,
    ):
        super().__init__()
        if len(label_names) < 2:
            raise UserError(f"the model needs at least two class names (label_names: {list(label_names)})")
        # Every setting reaches MLflow from the resolved config instead; a checkpoint holds plain values (no callables).
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"], logger=False)
        self.optimizer = plain_callable(optimizer or as_callable(DEFAULT_OPTIMIZER))
        self.lr_scheduler = plain_callable(lr_scheduler or as_callable(DEFAULT_LR_SCHEDULER))
        if isinstance(teacher, str):  # one teacher, as naturally written: --model.teacher models:/NAME/1
            self.hparams.teacher = [teacher]  # (LightningCLI saves the value as given, not this function's locals)
        self.model = load_classifier(model_name_or_path, label_names, attn_implementation)
        self.model.train()  # from_pretrained returns eval mode, and Lightning keeps a module's mode: dropout on
        if freeze_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)
        if dropout is not None:
            for module in self.model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = dropout  # attention layers read their dropout module's p too
        self.metrics = nn.ModuleDict({stage: evaluation_metrics(label_names, stage) for stage in EVAL_STAGES})
        self.loss = TrainingLoss(
            label_smoothing=label_smoothing, distill_alpha=distill_alpha, distill_temperature=distill_temperature
        )

    @property
    def needs_training_data(self) -> bool:
        """Whether the loss needs the training split before the fit: class weights, or a teacher's targets."""
        return self.hparams.class_balance > 0 or bool(self.hparams.teacher)

    def use_training_data(self, labels: Sequence[int]) -> None:
        """The training split's labels (as ids), for the class weights of the loss (`class_balance`)."""
        if self.hparams.class_balance > 0:
            self.loss.weights = class_weights(labels, len(self.hparams.label_names), self.hparams.class_balance)

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        if self.trainer.strategy.root_device.type == "cpu":
            # The same dropout with masks drawn faster, and plain attention unless one was chosen (emo.hardware).
            use_cpu_kernels(self.model, attention=self.hparams.attn_implementation is None)
        if self.hparams.teacher and self.loss.teacher is None:
            raise UserError(
                "model.teacher is set but the loss has no teacher targets (loss.teacher): compute them with "
                "emo.fit.teachers.prepare_teachers before fitting (emo fit does)"
            )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A kept checkpoint's calibration (`CALIBRATION_KEY`, written at the end of its fit) applies where a trainer
        validates, tests or predicts with it: the head's weights divided by the temperature, the sets' thresholds in
        the model's config, as the registered model has them. A fit resumed from it trains the raw weights, and
        `load_from_checkpoint` without a trainer gives them as saved."""
        record = checkpoint.get(CALIBRATION_KEY)
        if not record or self._trainer is None or self.trainer.state.fn == TrainerFn.FITTING:
            return
        if record.get("temperature"):
            name, _ = classifier_output_layer(self.model)
            state = checkpoint["state_dict"]
            for key in (f"model.{name}.weight", f"model.{name}.bias"):
                if key in state:
                    state[key] = state[key] / record["temperature"]
            self.model.config.calibration_temperature = record["temperature"]
        if record.get("prediction_sets"):
            self.model.config.prediction_sets = record["prediction_sets"]

    def forward(self, batch: dict) -> torch.Tensor:
        """The logits of a batch (its labels and example indices are not inputs)."""
        return self.model(**{key: value for key, value in batch.items() if key not in MODEL_INPUTS_EXCLUDE}).logits

    def logits_and_encoding(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits of a batch and the encoder's output beside them: its last hidden state, one vector per token
        (batch x tokens x hidden size), from the same forward pass."""
        output = self.model(
            **{key: value for key, value in batch.items() if key not in MODEL_INPUTS_EXCLUDE}, output_hidden_states=True
        )
        return output.logits, output.hidden_states[-1]

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch), batch["labels"], batch.get("example"))
        self.log(TRAIN_LOSS, loss, prog_bar=True)
        self.log(TRAIN_LR, self.lr_schedulers().get_last_lr()[-1])  # the head's: the peak under layer decay
        if self.checks_loss_now() and not torch.isfinite(
            loss
        ):  # every later step would be NaN too: stop, with the reason
            raise TrainingDiverged(
                f"the training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                f"lower the learning rate (--optimizer.lr, now {self.optimizers().defaults['lr']:g}) or check the data"
            )
        return loss

    def evaluation_step(self, batch: dict, stage: str) -> dict[str, torch.Tensor]:
        """Logs the plain cross-entropy, updates the metrics; returns the class probabilities (for callbacks)."""
        logits, labels = self(batch), batch["labels"]
        loss = F.cross_entropy(logits.float(), labels)  # plain, whatever the training loss: comparable across runs
        self.log(f"{stage}/{LOSS}", loss, on_epoch=True, sync_dist=True, batch_size=len(labels))
        self.metrics[stage].update(logits, labels)
        return {"loss": loss, "probabilities": logits.float().softmax(dim=-1)}

    def log_evaluation(self, stage: str) -> None:
        # compute() gathers the states of all processes: the metrics cover the whole split.
        values = self.metrics[stage].compute()
        shown = {name: values.pop(name) for name in [f"{stage}/{m.key}" for m in spec.METRICS if m.progress_bar]}
        self.log_dict(shown, prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)
        self.metrics[stage].reset()

    def checks_loss_now(self) -> bool:
        """Every step on a CPU; on an accelerator only where Lightning logs anyway, as reading a value waits for the device."""
        return self.device.type == "cpu" or self.global_step % max(self.trainer.log_every_n_steps, 1) == 0

    def validation_step(self, batch, batch_idx):
        return self.evaluation_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self.evaluation_step(batch, "test")

    def on_validation_epoch_end(self):
        self.log_evaluation("val")

    def on_test_epoch_end(self):
        self.log_evaluation("test")

    def predict_step(self, batch, batch_idx):
        return self(batch).float().softmax(dim=-1)  # probabilities in fp32, also under bf16 autocast

    def configure_optimizers(self):
        groups = parameter_groups(self.model, self.hparams.layer_lr_decay)
        optimizer = build_optimizer(self.optimizer, groups, self.device.type)
        scheduler = build_scheduler(self.lr_scheduler, optimizer, self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
