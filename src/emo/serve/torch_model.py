"""A registered transformers-flavor version as `emo serve` runs it: torch, fp32, batches of similar length.

The probabilities are those of `mlflow models serve` on the same version (the registered model's, its temperature
folded in); only a served torch version imports this module.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

BATCH_SIZE = 64  # texts per forward pass, sorted by length


class TorchTextClassifier:
    def load(self, model_dir: Path, tokenizer_dir: Path, max_length: int, threads: int = 0) -> "TorchTextClassifier":
        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.max_length = max_length
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        return self

    def probabilities(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """One row of class probabilities per text, in the texts' order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        result = np.empty((len(texts), len(self.labels)), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                result[rows] = self.model(**batch).logits.double().softmax(-1).numpy()
        return result
