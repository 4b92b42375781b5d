"""A registered transformers-flavor version as `emo serve` runs it: torch, fp32, batches of similar length.

The probabilities are those of `mlflow models serve` on the same version (the registered model's, its temperature
folded in); only a served torch version imports this module.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from emo.conformal import prediction_sets
from emo.inference import text_probabilities


class TorchTextClassifier:
    def load(self, model_dir: Path, tokenizer_dir: Path, max_length: int, threads: int = 0) -> "TorchTextClassifier":
        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.max_length = max_length
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.prediction_sets = getattr(self.model.config, "prediction_sets", None)  # fitted with it (emo.conformal)
        return self

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """One row of class probabilities per text, in the texts' order."""
        return text_probabilities(self.model, self.tokenizer, texts, self.max_length).double().numpy()

    def predictions(self, texts: Sequence[str]) -> tuple[np.ndarray, list | None]:
        """The probabilities and each text's prediction set (None for a version without sets)."""
        probabilities = self.probabilities(texts)
        return probabilities, prediction_sets(probabilities, self.prediction_sets) if self.prediction_sets else None
