"""A distilled fit's targets, prepared before training, and the run's record of them.

When the model has `teacher` set, the teachers' mean class probabilities on the training texts
(`emo.distill.teacher_probabilities`: computed once, cached) become the training loss's targets;
the run's tags name the teachers (as given, pinned to versions, their runs) and the probabilities
are logged as an artifact, so a distilled model says what taught it.
"""

import dataclasses
import os
import shutil
from pathlib import Path

from emo.distill import teacher_probabilities
from emo.spec import TEACHER_ARTIFACT, TEACHER_RUNS_TAG, TEACHER_TAG, TEACHER_VERSIONS_TAG
from emo.store import ModelSource, resolve_tracking_uri


@dataclasses.dataclass(frozen=True)
class Teachers:
    """The teachers as found in MLflow, and the cache file of their probabilities on the training texts."""

    sources: list[ModelSource]
    cache: Path


def prepare_teachers(model, datamodule, tracking_uri: str | None) -> Teachers | None:
    """Sets the training loss's targets (`model.loss.teacher`) of a model that names teachers; None for one that does not.
    The data module's training split must be read (`setup("fit")`); `tracking_uri` None: `emo.store`'s default."""
    teachers = model.hparams.get("teacher")
    if not teachers:
        return None
    model.loss.teacher, cache, sources = teacher_probabilities(
        teachers,
        list(datamodule.splits["train"]["text"]),
        datamodule.digests["train"],
        datamodule.hparams.max_length,
        tracking_uri or resolve_tracking_uri(),
        label_names=list(datamodule.label_names),
    )
    return Teachers(sources, cache)


def record_teachers(logger, teachers: Teachers) -> None:
    """The teachers' tags and their probabilities as an artifact of the run."""
    logger.record_tags(
        {
            TEACHER_TAG: ", ".join(source.given for source in teachers.sources),
            TEACHER_VERSIONS_TAG: ", ".join(source.pinned for source in teachers.sources),
            TEACHER_RUNS_TAG: ", ".join(source.run_id for source in teachers.sources),
        }
    )
    path = logger.artifact_file(TEACHER_ARTIFACT)
    shutil.copyfile(teachers.cache, path)
    logger.record_file(path, os.path.dirname(TEACHER_ARTIFACT))
