"""Knowledge distillation: the teachers' class probabilities on the training texts, computed once and cached (the loss
that mixes them into the student's is `emo.losses`).

A teacher is a logged model (`models:/NAME@ALIAS`, `models:/NAME/VERSION` or the id of the run that
logged it); with several, their probabilities are averaged (an ensemble teacher). The probabilities
are cached in `$EMO_CACHE_DIR` (default `~/.cache/emo`) under a key of the exact teacher versions, the
training examples' digest and the maximum length, so the next fit with the same teachers and data
reads them instead of running the teachers again.
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from emo import UserError
from emo.hardware import fast_precision
from emo.inference import text_probabilities
from emo.store import ModelSource, download_model, model_source


def cache_dir() -> Path:
    return Path(os.environ.get("EMO_CACHE_DIR") or Path.home() / ".cache" / "emo") / "teacher-probabilities"


def cache_key(sources: list[ModelSource], data_digest: str, max_length: int) -> str:
    """The exact teachers (an alias resolved to its version), the training examples and how they were truncated."""
    what = {"teachers": [source.pinned for source in sources], "data": data_digest, "max_length": max_length}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def predict_probabilities(
    model_dir: Path,
    tokenizer_dir: Path,
    texts: list[str],
    max_length: int,
    given: str,
    label_names: list[str] | None = None,
) -> torch.Tensor:
    """One teacher's class probabilities for `texts`, in their order, bf16 where it is fast. A teacher whose classes
    (names and ids) are not `label_names` is refused."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if label_names is not None and labels != list(label_names):
        raise UserError(f"--model.teacher {given}: its classes are {labels}, the data's are {list(label_names)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return text_probabilities(model, tokenizer, texts, max_length, bf16=fast_precision(device) != "32-true")


def teacher_probabilities(
    teachers: list[str],
    texts: list[str],
    data_digest: str,
    max_length: int,
    tracking_uri: str,
    label_names: list[str] | None = None,
) -> tuple[torch.Tensor, Path, list[ModelSource]]:
    """The mean of the teachers' class probabilities on `texts` (shape: texts x labels), from the cache when it has them.
    Each teacher's classes must be `label_names` (the data's), when given.

    Returns them, the cache file that holds them, and the teachers as found.
    """
    sources = [model_source(teacher, tracking_uri) for teacher in teachers]
    path = cache_dir() / f"{cache_key(sources, data_digest, max_length)}.pt"
    if path.is_file():
        print(f"emo: teacher probabilities from the cache ({path})", file=sys.stderr)
        return torch.load(path, weights_only=True), path, sources
    each = []
    for source in sources:
        print(
            f"emo: computing the probabilities of teacher {source.given} ({source.pinned}) on {len(texts)} training texts",
            file=sys.stderr,
        )
        with tempfile.TemporaryDirectory(prefix="emo-teacher-") as folder:
            model_dir, tokenizer_dir = download_model(source, tracking_uri, folder)
            each.append(predict_probabilities(model_dir, tokenizer_dir, texts, max_length, source.given, label_names))
    probabilities = torch.stack(each).mean(dim=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(probabilities, temporary)
    os.replace(temporary, path)  # a cache file is whole or absent
    return probabilities, path, sources
