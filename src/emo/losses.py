"""What training minimises: cross-entropy on the labels (weighted by class, smoothed), mixed with the distillation loss
when there are teacher targets. Validation and test losses stay plain cross-entropy, comparable across runs.

A new loss is a function here and a term in `TrainingLoss.__call__` (with its setting on `EmotionClassifier`).
"""

import dataclasses
from collections.abc import Sequence

import torch
from torch.nn import functional as F


def class_weights(labels: Sequence[int], num_classes: int, power: float) -> torch.Tensor:
    """(n / (k * n_c)) ** power: 0 weighs every example alike, 1 gives every class the same total weight."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).float().clamp(min=1)
    return (counts.sum() / (num_classes * counts)) ** power


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at `temperature`, times T² so its gradients keep their scale as T changes (Hinton et al.)."""
    student = F.log_softmax(logits.float() / temperature, dim=-1)
    target = teacher.float()
    if temperature != 1:
        target = F.softmax(target.clamp(min=1e-12).log() / temperature, dim=-1)  # the teacher's probabilities at T
    return F.kl_div(student, target, reduction="batchmean") * temperature**2


@dataclasses.dataclass(kw_only=True)  # by keyword: a field added in the middle shifts nothing
class TrainingLoss:
    """`(1 - alpha) CE + alpha T² KL(teacher || student)`; plain (weighted, smoothed) cross-entropy without teacher
    targets or at alpha 0. The class weights and the teacher targets are set when the fit starts."""

    label_smoothing: float = 0.0
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    weights: torch.Tensor | None = None  # per class (`class_weights`)
    teacher: torch.Tensor | None = None  # per training example (its `example` index): the teachers' class probabilities

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, examples: torch.Tensor | None = None
    ) -> torch.Tensor:
        weights = None if self.weights is None else self.weights.to(logits.device)
        loss = F.cross_entropy(logits.float(), labels, weight=weights, label_smoothing=self.label_smoothing)
        if self.teacher is None or self.distill_alpha == 0:
            return loss
        teacher = self.teacher[examples.cpu()].to(logits.device)
        alpha = self.distill_alpha
        return (1 - alpha) * loss + alpha * distillation_loss(logits, teacher, self.distill_temperature)
