"""How far an exported model is from its source, on a labelled split: accuracy and macro F1 of both, the largest
absolute difference of any class probability, and whether that is within what an export may lose."""

import dataclasses
from pathlib import Path

import numpy as np

from emo import UserError
from emo.analysis import confusion_matrix, confusion_metric

FP32_TOLERANCE = 1e-3  # largest absolute difference of a class probability, fp32 graph vs. the source
INT8_ACCURACY_LOSS = 0.005  # an int8 export may lose at most 0.5 points of accuracy


def macro_f1(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Macro F1 as a fit logs it (`emo.analysis.confusion_metric`)."""
    names = [str(c) for c in range(classes)]
    return float(confusion_metric(confusion_matrix(labels, predicted, classes), "f1_macro", names))


@dataclasses.dataclass(frozen=True)
class Parity:
    """The source and its export on the same examples."""

    examples: int
    source_acc: float
    export_acc: float
    source_f1_macro: float
    export_f1_macro: float
    max_abs_diff: float  # of any class probability of any example

    @classmethod
    def of(cls, labels, source: np.ndarray, exported: np.ndarray) -> "Parity":
        labels, classes = np.asarray(labels), source.shape[1]
        ours, theirs = source.argmax(axis=1), exported.argmax(axis=1)
        return cls(
            len(labels),
            float(np.mean(ours == labels)),
            float(np.mean(theirs == labels)),
            macro_f1(labels, ours, classes),
            macro_f1(labels, theirs, classes),
            float(np.abs(source - exported).max()),
        )

    @property
    def accuracy_loss(self) -> float:
        return self.source_acc - self.export_acc

    def metrics(self) -> dict[str, float]:
        return {f"parity/{field.name}": float(getattr(self, field.name)) for field in dataclasses.fields(self)}

    def summary(self) -> str:
        return (
            f"on {self.examples} test examples: accuracy {self.export_acc:.4f} (source {self.source_acc:.4f}), "
            f"macro F1 {self.export_f1_macro:.4f} (source {self.source_f1_macro:.4f}), "
            f"largest probability difference {self.max_abs_diff:.2e}"
        )

    def shortfall(self, quantize: str) -> str | None:
        """What this export loses beyond what its kind may lose, in one line; None when within."""
        if quantize == "none" and self.max_abs_diff > FP32_TOLERANCE:
            return f"the fp32 export differs from the source by {self.max_abs_diff:.2e} in a probability (> {FP32_TOLERANCE:g})"
        if quantize == "int8" and self.accuracy_loss > INT8_ACCURACY_LOSS:
            return (
                f"the int8 export loses {100 * self.accuracy_loss:.2f} points of accuracy on test "
                f"({100 * self.export_acc:.2f} % vs {100 * self.source_acc:.2f} %; at most {100 * INT8_ACCURACY_LOSS:g} allowed)"
            )
        return None


def split_examples(data_dir: Path, label2id: dict[str, int], split: str = "test") -> tuple[list[str], list[int]]:
    """The texts and class ids of a split in `data_dir`, in file order (labels as names or as ids)."""
    from emo.data import READERS, find_split_file

    path = find_split_file(data_dir, split)
    texts, labels = [], []
    for example in READERS[path.suffix](path):
        label = example["label"]
        if str(label) in label2id:
            labels.append(label2id[str(label)])
        elif str(label).isdigit() and int(label) < len(label2id):
            labels.append(int(label))
        else:
            raise UserError(
                f"{example.get('where', path)}: label {label!r} is not one of the model's ({', '.join(label2id)})"
            )
        texts.append(example["text"])
    return texts, labels
