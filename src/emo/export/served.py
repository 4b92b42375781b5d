"""The exported classifier: an ONNX graph, its tokenizer and its labels, run by onnxruntime; and the MLflow model
around it that `mlflow models serve` serves.

Needs numpy, onnxruntime and tokenizers only, and MLflow where MLflow runs it: no torch, no transformers, no pandas,
nothing of emo. This file is logged with the model (an MLflow "model from code"), so `mlflow models serve` runs it
as it was exported; `emo serve` and `emo predict` run today's copy of it on the export's files.

Requests and answers are the transformers flavor's: a list of texts in (`{"inputs": [...]}` or any request
format of MLflow's scoring protocol with one text column), one answer per text out, in order (`answers`): `label`
(the most probable class) and `score` (its probability), plus `p_<label>`, the probability of every class, and
`set`, the text's prediction set (its labels, most probable first), where the source carried sets' thresholds. An
empty list, or anything but a text, is refused with a message (HTTP 400).

The sets are those of the source (`emo.conformal`, logged beside this file), computed on the probabilities its
thresholds were fitted on: before the top-label map, which calibrates the probabilities shown, not the sets.
"""

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

try:  # served by MLflow: its own copy, logged beside this file (code_paths), with no emo installed
    from conformal import prediction_sets
except ModuleNotFoundError:  # in emo's process (emo export loads this file to log it; emo serve)
    from emo.conformal import prediction_sets

GRAPH_FILE = "model.onnx"  # logged as artifacts/model.onnx, beside artifacts/tokenizer/
SETTINGS_FILE = "classifier.json"  # labels (in id order), max_length, pad_id; the top-label map if fitted
TOP_LABEL_MAP = "top_label_map"  # its key in SETTINGS_FILE: {"confidence": [...], "calibrated": [...]}
PREDICTION_SETS = "prediction_sets"  # its key in SETTINGS_FILE: the thresholds of the source's sets (emo.conformal)
BATCH_SIZE = 64  # texts per forward pass, at most
# What a forward pass costs beyond its tokens, in tokens: texts are grouped into passes of similar length so that the
# sum of (PASS_TOKENS + texts x longest) is least. Random batches of 16 CARER texts: 186 texts/s as one padded pass,
# 243 one text at a time, 300-307 grouped with 16-64 here (docs/speed.md).
PASS_TOKENS = 16


class NotTexts(ValueError):
    """A request that holds no texts, or something else than texts: its message says which."""


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
    """The texts of a request: a list, array, Series or one-column DataFrame of strings, at least one; else
    `NotTexts` with a message that names the first wrong input."""
    if hasattr(model_input, "iloc") and hasattr(model_input, "columns"):  # a DataFrame, without importing pandas
        if model_input.shape[1] != 1:
            raise NotTexts(f"expected one column of texts, got {model_input.shape[1]} columns")
        model_input = model_input.iloc[:, 0]
    if isinstance(model_input, str):
        model_input = [model_input]
    texts = model_input.tolist() if hasattr(model_input, "tolist") else list(model_input)
    if not texts:
        raise NotTexts('no texts: send at least one, as {"inputs": ["a text", ...]}')
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            what = "null" if text is None or text != text else f"{type(text).__name__} {text!r}"
            raise NotTexts(f"input {i} is {what}, not a text")
    return texts


def answers(labels: Sequence[str], probabilities: np.ndarray, sets: list[list[int]] | None = None) -> list[dict]:
    """The answer to each text, in order: `label` (the most probable class), `score` (its probability),
    `p_<label>` for every class, and `set` (its labels, most probable first) where there are `sets`. The one place
    that shapes it: `mlflow models serve`, `emo serve` and Python users of the export all get these rows; a new field
    is a new key here."""
    keys = ("label", "score", *(f"p_{label}" for label in labels))
    rows = []
    for i, row in enumerate(np.asarray(probabilities, dtype=np.float64).tolist()):
        best = max(range(len(row)), key=row.__getitem__)
        rows.append(dict(zip(keys, (labels[best], row[best], *row), strict=True)))
        if sets is not None:
            rows[-1]["set"] = [labels[c] for c in sets[i]]
    return rows


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def passes(lengths: Sequence[int], most: int, pass_tokens: int = PASS_TOKENS) -> list[np.ndarray]:
    """The indices of `lengths` (texts' token counts) grouped into forward passes of at most `most` texts: sorted by
    length and cut where the total cost, the sum over passes of `pass_tokens` + texts x longest, is least (exact,
    by dynamic programming over the sorted lengths)."""
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order]
    cost = np.zeros(len(order) + 1)  # cost[j]: the least cost of the first j sorted texts
    start = np.zeros(len(order) + 1, dtype=np.int64)  # where the last pass of that least cost starts
    for j in range(1, len(order) + 1):
        first = np.arange(max(0, j - most), j)  # a pass holding texts first..j-1, padded to ordered[j - 1]
        total = cost[first] + pass_tokens + (j - first) * ordered[j - 1]
        best = int(total.argmin())
        cost[j], start[j] = total[best], first[best]
    groups, j = [], len(order)
    while j:
        groups.append(order[start[j] : j])
        j = start[j]
    return groups[::-1]


class OnnxTextClassifier:
    """Texts to class probabilities with an exported encoder classifier, `load`ed from the export's files."""

    def load(self, model_file: Path, tokenizer_dir: Path, threads: int = 0) -> "OnnxTextClassifier":
        """`threads`: forward passes run at once, each on one thread (0: one per core). On two cores, passes side by
        side beat one pass spread over both cores: 1.3-1.4x the texts/s for a random batch of 16 and for 2,000 texts,
        and one text alone about as fast on one thread as on two (159-189 against 163-188 texts/s; docs/speed.md)."""
        import onnxruntime
        from tokenizers import Tokenizer

        settings = json.loads((tokenizer_dir / SETTINGS_FILE).read_text())
        self.labels: list[str] = settings["labels"]
        self.max_length: int = settings["max_length"]
        self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        self.tokenizer.no_padding()  # each pass is padded to its longest text here
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.pad_id: int = settings["pad_id"]
        self.top_label_map: dict | None = settings.get(TOP_LABEL_MAP)
        self.prediction_sets: dict | None = settings.get(PREDICTION_SETS)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.enable_cpu_mem_arena = False  # an arena kept the largest batch's memory for good (+100 MiB)
        options.intra_op_num_threads = 1  # a pass runs on the thread that calls it; passes run side by side
        self.session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.side_by_side = ThreadPoolExecutor(threads or cores(), "emo-pass")
        return self

    def probabilities(self, texts: Sequence[str], batch_size: int = BATCH_SIZE, calibrated: bool = True) -> np.ndarray:
        """One row of class probabilities per text, in the texts' order (computed in passes of similar length, at
        most `batch_size` texts each, `passes`, run side by side); through the export's top-label map when it has
        one, unless not `calibrated`."""
        if len(texts) == 1:  # a single text: no sorting, no padding
            ids = np.array([self.tokenizer.encode(texts[0]).ids], dtype=np.int64)
            result = self.forward(ids, np.ones_like(ids))
        else:
            encoded = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            result = np.empty((len(texts), len(self.labels)), dtype=np.float64)

            def run(rows: np.ndarray) -> None:
                width = int(lengths[rows].max())
                input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
                for row, i in enumerate(rows.tolist()):
                    input_ids[row, : lengths[i]] = encoded[i]
                attention_mask = (np.arange(width) < lengths[rows][:, None]).astype(np.int64)
                result[rows] = self.forward(input_ids, attention_mask)

            for _ in self.side_by_side.map(run, passes(lengths, batch_size)):
                pass  # each pass writes its rows; iterating raises a pass's error here
        if calibrated and self.top_label_map:
            return top_label_calibrated(result, **self.top_label_map)
        return result

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The graph's class probabilities of one padded batch."""
        logits = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]
        return softmax(logits.astype(np.float64))

    def predictions(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, list | None]:
        """The probabilities shown (through the top-label map where there is one) and each text's prediction set,
        computed on the probabilities before the map (None without sets)."""
        raw = self.probabilities(texts, batch_size, calibrated=False)
        shown = top_label_calibrated(raw, **self.top_label_map) if self.top_label_map else raw
        return shown, prediction_sets(raw, self.prediction_sets) if self.prediction_sets else None

    def answers(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """The answer to each text (`answers`)."""
        return answers(self.labels, *self.predictions(texts))


if __name__.startswith("code_model_"):  # run by MLflow as the logged model's code; an import by name is not
    import mlflow
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    class ServedTextClassifier(mlflow.pyfunc.PythonModel):
        """`OnnxTextClassifier` as MLflow loads and serves it: the texts checked, one answer per text."""

        def load_context(self, context) -> None:
            artifacts = context.artifacts
            self.classifier = OnnxTextClassifier().load(Path(artifacts["model"]), Path(artifacts["tokenizer"]))

        def predict(self, context, model_input: list[Any], params=None) -> list[dict[str, Any]]:
            """`model_input`: the texts as MLflow passes them (`checked_texts`). The type hints are the model's
            signature: MLflow then hands the list over as it is, where a signature of columns had it build a pandas
            DataFrame first (5x the time of this whole call for one text)."""
            try:
                texts = checked_texts(model_input)
            except NotTexts as error:
                raise MlflowException(str(error), INVALID_PARAMETER_VALUE) from None
            return self.classifier.answers(texts)

    mlflow.models.set_model(ServedTextClassifier())
