"""A fold of an audit (`data.holdout_fold`) predicts the examples it never saw (`record_heldout`).

After the test of the kept checkpoint, the class probabilities of the held-out fold's examples are
logged as `audit/heldout_probabilities.csv` (index in the training split as read, text, given label,
`p_<label>`), with the digest of that training split as read: `emo audit` joins the folds' files.
"""

from lightning.pytorch.utilities import rank_zero_only

from emo.analysis import predictions_frame
from emo.inference import loader_probabilities
from emo.spec import AUDITED_DIGEST_TAG, HELDOUT_ARTIFACT


@rank_zero_only
def record_heldout(logger, pl_module, datamodule) -> None:
    """Logs the held-out fold's probabilities; a fit without `data.holdout_fold` has none to log."""
    if logger is None or "heldout" not in datamodule.splits:
        return
    heldout = loader_probabilities(pl_module, datamodule.heldout_loader(), key="index")
    texts = dict(zip(datamodule.splits["heldout"]["index"], datamodule.splits["heldout"]["text"], strict=True))
    index = heldout["index"].numpy()
    frame = predictions_frame(
        [texts[i] for i in index], heldout["label"].numpy(), heldout["probabilities"].numpy(),
        list(pl_module.hparams.label_names), index,
    )  # fmt: skip
    frame = frame.rename(columns={"example": "index"}).sort_values("index")
    logger.record_text(frame.to_csv(index=False), HELDOUT_ARTIFACT)
    logger.record_tags({AUDITED_DIGEST_TAG: datamodule.train_as_read_digest})
