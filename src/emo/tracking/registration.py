"""`ModelRegistry`: after `fit` and its test on the best checkpoint, the model is logged and registered (through the
run's journal, so an outage delays it and loses nothing)."""

from lightning.pytorch import Callback

from emo.spec import DEFAULT_REGISTERED_MODEL
from emo.tracking.logger import journal_logger


class ModelRegistry(Callback):
    """Logs the fitted model with MLflow's transformers flavor and registers it.

    Args:
        log_model: Log the tested model with MLflow's transformers flavor (model + tokenizer).
        registered_model_name: Register it under this name; `null` logs without registering.
        champion_alias: Alias that moves to a new version when it beats the current holder.
        champion_metric: Metric of the runs compared for the alias.
    """

    def __init__(
        self,
        log_model: bool = True,
        registered_model_name: str | None = DEFAULT_REGISTERED_MODEL,
        champion_alias: str = "champion",
        champion_metric: str = "test/f1_weighted",
    ):
        self.log_model = log_model
        self.registered_model_name = registered_model_name
        self.champion_alias = champion_alias
        self.champion_metric = champion_metric
        self.fitted = False

    def on_fit_end(self, trainer, pl_module):
        self.fitted = not trainer.fast_dev_run

    def on_test_end(self, trainer, pl_module):
        logger = journal_logger(trainer)
        if not (self.fitted and self.log_model and trainer.is_global_zero and logger):
            return
        self.fitted = False  # a later test in the same process is not a new model
        logger.record_model(pl_module.model, trainer.datamodule.tokenizer)
        if self.registered_model_name:
            logger.record_registration(self.registered_model_name, self.champion_alias, self.champion_metric)
