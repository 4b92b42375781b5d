"""`HeldOutPredictions`: a fold of an audit (`data.holdout_fold`) predicts the examples it never saw.

After the test of the kept checkpoint, the class probabilities of the held-out fold's examples are
logged as `audit/heldout_probabilities.csv` (index in the training split as read, text, given label,
`p_<label>`), with the digest of that training split as read: `emo audit` joins the folds' files.
"""

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from emo.analysis import predictions_frame
from emo.spec import AUDITED_DIGEST_TAG, HELDOUT_ARTIFACT
from emo.tracking.logger import journal_logger


@torch.inference_mode()
def heldout_probabilities(pl_module: LightningModule, loader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, label, probabilities) of every held-out example, in the loader's order."""
    was_training = pl_module.training
    pl_module.eval()
    indices, labels, probabilities = [], [], []
    for batch in loader:
        indices.append(batch.pop("index"))
        batch = {key: value.to(pl_module.device) for key, value in batch.items()}
        labels.append(batch["labels"].cpu())
        probabilities.append(pl_module(batch).float().softmax(dim=-1).cpu())
    pl_module.train(was_training)
    return torch.cat(indices).numpy(), torch.cat(labels).numpy(), torch.cat(probabilities).numpy()


class HeldOutPredictions(Callback):
    """Logs the held-out fold's probabilities after the test; a no-op for a fit without `data.holdout_fold`."""

    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule, logger = trainer.datamodule, journal_logger(trainer)
        if logger is None or datamodule is None or "heldout" not in datamodule.splits:
            return
        index, labels, probabilities = heldout_probabilities(pl_module, datamodule.heldout_loader())
        texts = dict(zip(datamodule.splits["heldout"]["index"], datamodule.splits["heldout"]["text"], strict=True))
        frame = predictions_frame(
            [texts[i] for i in index], labels, probabilities, list(pl_module.hparams.label_names), index
        )
        frame = frame.rename(columns={"example": "index"}).sort_values("index")
        logger.record_text(frame.to_csv(index=False), HELDOUT_ARTIFACT)
        logger.record_tags({AUDITED_DIGEST_TAG: datamodule.train_as_read_digest})
