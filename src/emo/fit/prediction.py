"""`emo predict`: label and class probabilities for each line of a text file, written as CSV."""

import csv
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Writes `text,label,p_<label>...` rows, in the order of the input file.

    Args:
        output_file: CSV file to write.
    """

    def __init__(self, output_file: str = "predictions.csv"):
        super().__init__(write_interval="epoch")
        self.output_file = output_file

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        sorted_probabilities = torch.cat(predictions).float().tolist()  # batches come sorted by length
        probabilities = [[]] * len(sorted_probabilities)
        for line, p in zip(trainer.datamodule.predict_lines, sorted_probabilities, strict=True):
            probabilities[line] = p
        labels = list(pl_module.hparams.label_names)
        path = Path(self.output_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["text", "label", *(f"p_{label}" for label in labels)])
            for text, p in zip(trainer.datamodule.predict_texts, probabilities, strict=True):
                writer.writerow([text, labels[max(range(len(p)), key=p.__getitem__)], *(f"{x:.5f}" for x in p)])
        print(f"Wrote {len(probabilities)} predictions to {path}")
