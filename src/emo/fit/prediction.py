"""`emo predict`: label, class probabilities and, where the model carries them, prediction sets for each line of a
text file, written as CSV (`emo.prediction_file`)."""

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from emo.conformal import prediction_sets
from emo.prediction_file import write_predictions


class PredictionWriter(BasePredictionWriter):
    """Writes a row per line of the input file, in its order (`emo.prediction_file`).

    Args:
        output_file: CSV file to write.
    """

    def __init__(self, output_file: str = "predictions.csv"):
        super().__init__(write_interval="epoch")
        self.output_file = output_file

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        ordered = torch.empty(len(trainer.datamodule.predict_lines), len(pl_module.hparams.label_names))
        ordered[torch.tensor(trainer.datamodule.predict_lines)] = torch.cat(predictions).float()  # batches by length
        probabilities = ordered.double().numpy()
        record = getattr(pl_module.model.config, "prediction_sets", None)  # fitted with the model (emo.fit.finish)
        sets = prediction_sets(probabilities, record) if record else None
        labels = list(pl_module.hparams.label_names)
        write_predictions(self.output_file, trainer.datamodule.predict_texts, probabilities, labels, sets)
        print(f"Wrote {len(probabilities)} predictions to {self.output_file}")
