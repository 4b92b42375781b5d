"""The exported classifier as MLflow serves it: an ONNX graph, its tokenizer and its labels, run by onnxruntime.

Needs numpy, pandas, onnxruntime, tokenizers and MLflow only: no torch, no transformers, nothing of emo. This
file is logged with the model (an MLflow "model from code"), so `mlflow models serve` runs it as it was exported.

Requests and answers are the transformers flavor's: a list of texts in (`{"inputs": [...]}` or any request
format of MLflow's scoring protocol with one text column), one row per text out, in order, with `label` (the
most probable class) and `score` (its probability), plus `p_<label>`, the probability of every class. An empty
list, or anything but a text, is refused with a message (HTTP 400).
"""

import json
from collections.abc import Sequence
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

GRAPH_FILE = "model.onnx"  # logged as artifacts/model.onnx, beside artifacts/tokenizer/
SETTINGS_FILE = "classifier.json"  # labels (in id order), max_length, pad_id; the top-label map if fitted
TOP_LABEL_MAP = "top_label_map"  # its key in SETTINGS_FILE: {"confidence": [...], "calibrated": [...]}
BATCH_SIZE = 64  # texts per forward pass, sorted by length so that a batch holds texts of similar length


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def top_label_calibrated(probabilities: np.ndarray, confidence: Sequence[float], calibrated: Sequence[float]):
    """Each row's top probability mapped by the knots `confidence` -> `calibrated` (linear between them, flat
    beyond; `emo.calibration.fit_top_label_map`), the other classes scaled to share the rest. The top class keeps
    at least the probability that ties it with the second, so no predicted label changes."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    ordered = np.sort(probabilities, axis=1)
    top, second = ordered[:, -1], ordered[:, -2]
    # the new top at which it would tie the second, the others scaled alike (a top of exactly 1 stays 1), and a
    # margin that survives rounding to float32
    keeps_top = np.divide(second, 1 - top + second, out=np.ones_like(top), where=top < 1) + 1e-6
    mapped = np.clip(np.maximum(np.interp(top, confidence, calibrated), keeps_top), None, 1.0)
    rest = np.divide(1 - mapped, 1 - top, out=np.zeros_like(top), where=top < 1)
    result = probabilities * rest[:, None]
    result[np.arange(len(result)), probabilities.argmax(axis=1)] = mapped
    return result


def checked_texts(model_input) -> list[str]:
    """The texts of a request: a list, array, Series or one-column DataFrame of strings, at least one."""
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] != 1:
            raise MlflowException(
                f"expected one column of texts, got {model_input.shape[1]} columns", INVALID_PARAMETER_VALUE
            )
        model_input = model_input.iloc[:, 0]
    if isinstance(model_input, str):
        model_input = [model_input]
    texts = list(model_input.tolist() if hasattr(model_input, "tolist") else model_input)
    if not texts:
        raise MlflowException('no texts: send at least one, as {"inputs": ["a text", ...]}', INVALID_PARAMETER_VALUE)
    wrong = next(((i, text) for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if wrong:
        what = "null" if wrong[1] is None or wrong[1] != wrong[1] else f"{type(wrong[1]).__name__} {wrong[1]!r}"
        raise MlflowException(f"input {wrong[0]} is {what}, not a text", INVALID_PARAMETER_VALUE)
    return texts


class OnnxTextClassifier(mlflow.pyfunc.PythonModel):
    """Texts to class probabilities with an exported encoder classifier; `load` it from a folder or let MLflow."""

    def load_context(self, context) -> None:
        self.load(Path(context.artifacts["model"]), Path(context.artifacts["tokenizer"]))

    def load(self, model_file: Path, tokenizer_dir: Path) -> "OnnxTextClassifier":
        import onnxruntime
        from tokenizers import Tokenizer

        settings = json.loads((tokenizer_dir / SETTINGS_FILE).read_text())
        self.labels: list[str] = settings["labels"]
        self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        self.tokenizer.no_padding()  # each batch is padded to its longest text here
        self.tokenizer.enable_truncation(max_length=settings["max_length"])
        self.pad_id: int = settings["pad_id"]
        self.top_label_map: dict | None = settings.get(TOP_LABEL_MAP)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        # Threads that wait by sleeping, not spinning: on a CPU shared with other work (uvicorn, other processes),
        # spinning threads took 1.9x the time per text here (docs/serving.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_cpu_mem_arena = False  # an arena kept the largest batch's memory for good (+100 MiB)
        self.session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        return self

    def probabilities(self, texts: Sequence[str], batch_size: int = BATCH_SIZE, calibrated: bool = True) -> np.ndarray:
        """One row of class probabilities per text, in the texts' order (computed in batches of similar length);
        through the export's top-label map when it has one, unless not `calibrated`."""
        encoded = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        result = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in rows)
            input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            attention_mask = np.zeros((len(rows), width), dtype=np.int64)
            for row, i in enumerate(rows):
                input_ids[row, : len(encoded[i])] = encoded[i]
                attention_mask[row, : len(encoded[i])] = 1
            logits = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]
            result[rows] = softmax(logits.astype(np.float64))
        if calibrated and self.top_label_map:
            return top_label_calibrated(result, **self.top_label_map)
        return result

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """`model_input`: the texts as MLflow passes them (a one-column DataFrame, or a list); see `checked_texts`."""
        texts = checked_texts(model_input)
        probabilities = self.probabilities(texts)
        best = probabilities.argmax(axis=1)
        frame = pd.DataFrame(
            {"label": [self.labels[i] for i in best], "score": probabilities[np.arange(len(texts)), best].astype(float)}
        )
        for i, label in enumerate(self.labels):
            frame[f"p_{label}"] = probabilities[:, i].astype(float)
        return frame


if __name__.startswith("code_model_"):  # run by MLflow as the logged model's code; an import by name is not
    mlflow.models.set_model(OnnxTextClassifier())
