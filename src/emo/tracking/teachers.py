"""`TeacherTargets`: a distilled fit's targets, prepared before training, and the run's record of them.

When the model has `teacher` set, the teachers' mean class probabilities on the training texts
(`emo.distill.teacher_probabilities`: computed once, cached) become the training loss's targets;
the run's tags name the teachers (as given, pinned to versions, their runs) and the probabilities
are logged as an artifact, so a distilled model says what taught it.
"""

import os
import shutil

from lightning.pytorch import Callback, LightningModule, Trainer

from emo.distill import teacher_probabilities
from emo.spec import TEACHER_ARTIFACT, TEACHER_RUNS_TAG, TEACHER_TAG, TEACHER_VERSIONS_TAG
from emo.store import resolve_tracking_uri
from emo.tracking.logger import journal_logger


class TeacherTargets(Callback):
    """Sets `pl_module.loss.teacher` for a fit whose model names teachers; a no-op otherwise."""

    def __init__(self):
        self.sources: list = []  # the teachers as found in MLflow
        self.cache = None  # the cache file of their probabilities

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        teachers = pl_module.hparams.get("teacher")
        if stage != "fit" or not teachers:
            return
        datamodule = trainer.datamodule
        tracking_uri = getattr(trainer.logger, "tracking_uri", None) or resolve_tracking_uri()
        pl_module.loss.teacher, self.cache, self.sources = teacher_probabilities(
            teachers,
            list(datamodule.splits["train"]["text"]),
            datamodule.digests["train"],
            datamodule.hparams.max_length,
            tracking_uri,
            label_names=list(datamodule.label_names),
        )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = journal_logger(trainer)
        if logger is None or self.cache is None or logger.resume_step is not None or not trainer.is_global_zero:
            return
        logger.record_tags(
            {
                TEACHER_TAG: ", ".join(source.given for source in self.sources),
                TEACHER_VERSIONS_TAG: ", ".join(source.pinned for source in self.sources),
                TEACHER_RUNS_TAG: ", ".join(source.run_id for source in self.sources),
            }
        )
        path = logger.artifact_file(TEACHER_ARTIFACT)
        shutil.copyfile(self.cache, path)
        logger.record_file(path, os.path.dirname(TEACHER_ARTIFACT))
