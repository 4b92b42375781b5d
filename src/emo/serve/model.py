"""The model `emo serve` serves, as its inference worker loads it: a registered version's files on disk.

An ONNX export (`emo export`) runs on onnxruntime with the export's own code (`emo.export.served`); any other
registered emo model is MLflow's transformers flavor and runs on torch (`emo.serve.torch_model`, imported only then).
"""

import dataclasses
import json
from pathlib import Path
from typing import Literal

from emo.export.served import GRAPH_FILE, SETTINGS_FILE, OnnxTextClassifier


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """A downloaded registered version.

    Args:
        uri: The exact version, models:/NAME/VERSION.
        kind: onnx (an export) or torch (the transformers flavor).
        folder: The downloaded MLflow model.
        labels: The classes in id order.
        max_length: Tokens the model reads of a text; the rest is cut, as in training.
        model_dir, tokenizer_dir: The torch model's Hugging Face folders (onnx: unused).
    """

    uri: str
    kind: Literal["onnx", "torch"]
    folder: str
    labels: tuple[str, ...]
    max_length: int
    model_dir: str = ""
    tokenizer_dir: str = ""

    @classmethod
    def onnx(cls, uri: str, folder: Path) -> "ServedModel":
        settings = json.loads((folder / "artifacts" / "tokenizer" / SETTINGS_FILE).read_text())
        return cls(uri, "onnx", str(folder), tuple(settings["labels"]), int(settings["max_length"]))

    @classmethod
    def torch(cls, uri: str, model_dir: Path, tokenizer_dir: Path, max_length: int) -> "ServedModel":
        config = json.loads((model_dir / "config.json").read_text())
        labels = tuple(config["id2label"][str(i)] for i in range(len(config["id2label"])))
        return cls(uri, "torch", str(model_dir.parent), labels, max_length, str(model_dir), str(tokenizer_dir))

    def load(self, threads: int = 0):
        """The classifier, ready: `probabilities(texts)` gives one row of class probabilities per text, in order.
        `threads`: an export's forward passes run at once, each on one thread, or torch's threads (0: one per
        core)."""
        if self.kind == "onnx":
            artifacts = Path(self.folder) / "artifacts"
            return OnnxTextClassifier().load(artifacts / GRAPH_FILE, artifacts / "tokenizer", threads)
        from emo.serve.torch_model import TorchTextClassifier

        return TorchTextClassifier().load(Path(self.model_dir), Path(self.tokenizer_dir), self.max_length, threads)
