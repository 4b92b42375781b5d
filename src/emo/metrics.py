"""Calibration measures torchmetrics does not have, as torchmetrics metrics (`emo.spec.METRICS` names them): the
class-wise expected calibration error and the Brier score. `emo.calibration` computes the same in numpy
(`classwise_ece`, `brier_score`), for the scores before and after the temperature; tests hold the two equal.
"""

import torch
from torchmetrics import Metric


class ClasswiseCalibrationError(Metric):
    """Class-wise ECE (Kull et al., 2019): for each class, the ECE of its probability as a forecast of "this class"
    (the examples binned by that probability, |share of the class - mean probability| weighted by the bin's share),
    averaged over the classes. Bins as torchmetrics' `MulticlassCalibrationError`: `n_bins` equal widths, and
    probability exactly 1 in a bin of its own."""

    full_state_update = False

    def __init__(self, num_classes: int, n_bins: int = 15, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.n_bins = num_classes, n_bins
        for name in ("count", "probability", "hits"):  # per class and bin
            self.add_state(name, torch.zeros(num_classes, n_bins + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        probabilities = preds.float().softmax(dim=-1) if not _are_probabilities(preds) else preds.float()
        probabilities = probabilities.double()
        edges = torch.linspace(0, 1, self.n_bins + 1, dtype=torch.float64, device=probabilities.device)
        index = torch.bucketize(probabilities, edges, right=True) - 1  # (examples, classes)
        hits = torch.nn.functional.one_hot(target, self.num_classes).double()
        for state, values in ((self.count, torch.ones_like(probabilities)), (self.probability, probabilities),
                              (self.hits, hits)):  # fmt: skip
            state.scatter_add_(1, index.T, values.T)

    def compute(self) -> torch.Tensor:
        examples = self.count[0].sum().clamp(min=1)
        gaps = (self.hits - self.probability).abs().sum(dim=1) / examples  # |sum of hits - sum of probabilities|
        return gaps.mean().float()


class BrierScore(Metric):
    """The multiclass Brier score: the mean over examples of the squared distance between the class probabilities and
    the one-hot true class, summed over the classes (0 is perfect, 2 the worst; scikit-learn's `brier_score_loss`)."""

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("examples", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        probabilities = preds.float().softmax(dim=-1) if not _are_probabilities(preds) else preds.float()
        hits = torch.nn.functional.one_hot(target, self.num_classes)
        self.total += ((probabilities.double() - hits) ** 2).sum()
        self.examples += len(target)

    def compute(self) -> torch.Tensor:
        return (self.total / self.examples.clamp(min=1)).float()


def _are_probabilities(preds: torch.Tensor) -> bool:
    """As torchmetrics decides for its calibration error: values in [0, 1] are probabilities, others logits."""
    return bool(((preds >= 0) & (preds <= 1)).all())
