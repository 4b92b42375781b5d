"""A fold of an audit (`data.holdout_fold`) predicts the examples it never saw (`record_heldout`).

After the test of the kept checkpoint, the class probabilities of the held-out fold's examples are
logged as `audit/heldout_probabilities.csv` (index in the training split as read, text, given label,
`p_<label>`), with the digest of that training split as read: `emo audit` joins the folds' files.
Beside them, `audit/heldout_features.npz`: the fold model's pooled encoder output (float16) of its held-out
examples and of every validation and test example, one embedding space per fold (`read_heldout_features`).
"""

import io

import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from emo.analysis import predictions_frame
from emo.inference import loader_probabilities
from emo.spec import AUDITED_DIGEST_TAG, HELDOUT_ARTIFACT, HELDOUT_FEATURES_ARTIFACT

FEATURE_SPLITS = ("heldout", "validation", "test")  # the held-out training examples, then the evaluation splits


@rank_zero_only
def record_heldout(logger, pl_module, datamodule) -> None:
    """Logs the held-out fold's probabilities and the features of its examples and of validation and test; a fit
    without `data.holdout_fold` has none to log."""
    if logger is None or "heldout" not in datamodule.splits:
        return
    heldout = loader_probabilities(pl_module, datamodule.heldout_loader(), key="index", features=True)
    texts = dict(zip(datamodule.splits["heldout"]["index"], datamodule.splits["heldout"]["text"], strict=True))
    index = heldout["index"].numpy()
    frame = predictions_frame(
        [texts[i] for i in index], heldout["label"].numpy(), heldout["probabilities"].numpy(),
        list(pl_module.hparams.label_names), index,
    )  # fmt: skip
    frame = frame.rename(columns={"example": "index"}).sort_values("index")
    logger.record_text(frame.to_csv(index=False), HELDOUT_ARTIFACT)
    features = {"heldout": (index, heldout["features"].numpy())}
    for split in FEATURE_SPLITS[1:]:
        predicted = loader_probabilities(pl_module, datamodule.eval_loader(split), key="example", features=True)
        features[split] = (predicted["example"].numpy(), predicted["features"].numpy())
    path = logger.artifact_file(HELDOUT_FEATURES_ARTIFACT)
    path.write_bytes(features_file(features))
    logger.record_file(path, HELDOUT_FEATURES_ARTIFACT.rpartition("/")[0])
    logger.record_tags({AUDITED_DIGEST_TAG: datamodule.train_as_read_digest})


def features_file(features: dict) -> bytes:
    """`{split: (examples, features)}` as one compressed `.npz`, each split's rows in example order: `<split>` the
    features (float16), `<split>_example` the examples' places (held out: the index in the training split as read;
    validation and test: the line in the split)."""
    arrays = {}
    for split, (examples, vectors) in features.items():
        order = np.argsort(examples, kind="stable")
        arrays[split] = np.asarray(vectors, dtype=np.float32)[order].astype(np.float16)
        arrays[f"{split}_example"] = np.asarray(examples)[order]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def read_heldout_features(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A fold's `audit/heldout_features.npz`: `{split: (examples, features as float32)}` for `FEATURE_SPLITS`."""
    with np.load(path, allow_pickle=False) as saved:
        return {split: (saved[f"{split}_example"], saved[split].astype(np.float32)) for split in FEATURE_SPLITS}
