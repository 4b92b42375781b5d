"""`EvaluationPredictions`: what a run keeps of an evaluation besides its metrics, for the test's artifacts.

Every evaluated example's index in its split, true label and class probabilities, gathered from all
processes. A checkpoint carries the predictions of the validation that scored it (`VAL_PREDICTIONS_KEY`),
so that the end of a fit has the kept checkpoint's validation predictions, also when the fit was resumed
in another process: they calibrate the model and are logged beside the test's (`emo report --compare_split val`).
"""

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

VAL_PREDICTIONS_KEY = "val_predictions"  # in a checkpoint: the predictions of the validation that scored it
VAL_STEP_KEY = "val_step"  # in a checkpoint: the step that validation's metrics were logged at


def confusion_matrix(predictions: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """Counts, true label by row, predicted label by column."""
    predicted = predictions["probabilities"].argmax(dim=1)
    cells = predictions["label"] * num_classes + predicted
    return torch.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


class EvaluationPredictions(Callback):
    """`predictions[stage]`: `example`, `label` and `probabilities` of the last evaluation at `val` or `test`, in
    example order."""

    def __init__(self):
        self.batches: dict[str, list[tuple[torch.Tensor, ...]]] = {"val": [], "test": []}
        self.predictions: dict[str, dict[str, torch.Tensor]] = {}
        self.val_step: int | None = None  # of the last validation during a fit

    def collect(self, stage: str, outputs, batch: dict) -> None:
        if "example" in batch:
            self.batches[stage].append((batch["example"], batch["labels"], outputs["probabilities"]))

    def gather(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Every example once (a distributed sampler pads with repeats), in example order."""
        batches, self.batches[stage] = self.batches[stage], []
        if not batches or trainer.sanity_checking:
            return
        columns = [torch.cat(column) for column in zip(*batches, strict=True)]
        if trainer.world_size > 1:
            columns = [pl_module.all_gather(column).flatten(0, 1) for column in columns]
        examples, labels, probabilities = (column.cpu() for column in columns)
        order = torch.argsort(examples)
        keep = torch.ones_like(order, dtype=torch.bool)
        keep[1:] = examples[order][1:] != examples[order][:-1]
        order = order[keep]
        self.predictions[stage] = {
            "example": examples[order],
            "label": labels[order],
            "probabilities": probabilities[order],
        }

    def on_validation_epoch_start(self, trainer, pl_module):
        self.batches["val"] = []

    def on_test_epoch_start(self, trainer, pl_module):
        self.batches["test"] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.collect("val", outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.collect("test", outputs, batch)

    def on_validation_epoch_end(self, trainer, pl_module):
        self.gather(trainer, pl_module, "val")
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.val_step = trainer.fit_loop.epoch_loop._batches_that_stepped  # where Lightning logs its metrics

    def on_test_epoch_end(self, trainer, pl_module):
        self.gather(trainer, pl_module, "test")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # A checkpoint is saved right after the validation that scored it: its predictions travel with it.
        if "val" in self.predictions:
            checkpoint[VAL_PREDICTIONS_KEY] = self.predictions["val"]
            checkpoint[VAL_STEP_KEY] = self.val_step
