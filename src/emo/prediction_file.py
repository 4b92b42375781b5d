"""The CSV `emo predict` writes, from a checkpoint, a registered version or an ONNX export alike: a row a text, in the
input file's order: `text`, `label` (the most probable class), `p_<label>` for every class in the model's order (5
decimals), and `set` where the model carries prediction sets (`emo.conformal`): its labels, most probable first,
joined by `|` (empty: no class is plausible enough)."""

import csv
from collections.abc import Sequence
from pathlib import Path

SET_SEPARATOR = "|"


def set_text(classes: Sequence[int], label_names: Sequence[str]) -> str:
    return SET_SEPARATOR.join(label_names[c] for c in classes)


def write_predictions(
    path, texts: Sequence[str], probabilities, label_names: Sequence[str], sets: Sequence[Sequence[int]] | None = None
) -> None:
    """Writes the rows (`probabilities`: one row of floats per text, in the texts' order; `sets`: each text's
    classes, or None for a model without sets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label", *(f"p_{label}" for label in label_names), *(["set"] if sets else [])])
        for i, (text, row) in enumerate(zip(texts, probabilities, strict=True)):
            row = [float(p) for p in row]
            best = max(range(len(row)), key=row.__getitem__)
            extra = [set_text(sets[i], label_names)] if sets else []
            writer.writerow([text, label_names[best], *(f"{p:.5f}" for p in row), *extra])
