"""A Hugging Face sequence classifier as an ONNX graph: `input_ids` and `attention_mask` in (batch and sequence
axes dynamic), `logits` out; and its int8 version (dynamic quantization: int8 weights, activations quantized per
batch as it runs)."""

import logging
import warnings
from pathlib import Path

import torch

INPUTS = ("input_ids", "attention_mask")
QUANTIZATIONS = ("int8", "none")


class Logits(torch.nn.Module):
    """The classifier as the graph sees it: two tensors in, the logits out (not a ModelOutput)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_graph(model, tokenizer, path: Path) -> Path:
    """Writes the fp32 graph of `model` (put in eval mode) to `path`, weights included (one file), traced on two texts."""
    example = tokenizer(["an example text to trace the graph with", "and another"], padding=True, return_tensors="pt")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    wrapped = Logits(model.eval()).eval()
    with warnings.catch_warnings(), quiet_exporter():
        warnings.simplefilter("ignore", UserWarning)  # the exporter's notes on how it named the dynamic axes
        warnings.filterwarnings(
            "ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning
        )  # torch's own
        torch.onnx.export(
            wrapped,
            tuple(example[name] for name in INPUTS),
            str(path),
            dynamo=True,
            input_names=list(INPUTS),
            output_names=["logits"],
            optimize=True,
            verbose=False,
            external_data=False,
            dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUTS},
        )
    return path


class quiet_exporter:
    """torch's exporter logs a warning for each torchvision operator it skips (torchvision is not installed)."""

    def __enter__(self):
        self.logger = logging.getLogger("torch.onnx._internal.exporter._registration")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def quantize_int8(fp32: Path, int8: Path) -> Path:
    """The graph with int8 weights for its matrix products, a scale per output channel (dynamic quantization:
    activations quantized per batch as it runs). Per channel, because one scale per matrix lost 0.6 points of test
    accuracy on the MiniLM champion, per channel none (docs/serving.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process first, as a root-logger warning: tried, no better here
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    return int8
