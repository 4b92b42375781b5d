"""The last step of a fit: the tested model logged (MLflow's transformers flavor) and registered, through the run's
journal, so an outage delays it and loses nothing. Which version becomes champion is `emo.store.register`'s rule."""

from lightning.pytorch.utilities import rank_zero_only

from emo.spec import DEFAULT_REGISTERED_MODEL


class Registry:
    """The `registry:` section: what becomes of the fitted model.

    Args:
        log_model: Log the tested model with MLflow's transformers flavor (model + tokenizer).
        registered_model_name: Register it under this name; `null` logs without registering.
        champion_alias: Alias that moves to a new version when it beats the current holder on validation.
        champion_metric: Validation metric at the kept checkpoint that decides the champion (`val/...`; never test:
            test is reported on the version, not compared).
    """

    def __init__(
        self,
        log_model: bool = True,
        registered_model_name: str | None = DEFAULT_REGISTERED_MODEL,
        champion_alias: str = "champion",
        champion_metric: str = "val/f1_weighted",
    ):
        self.log_model = log_model
        self.registered_model_name = registered_model_name
        self.champion_alias = champion_alias
        self.champion_metric = champion_metric


@rank_zero_only
def log_and_register(logger, model, tokenizer, registry: Registry) -> None:
    """Logs `model` (the Hugging Face model inside emo's) with its tokenizer; registers it when the registry names it."""
    if logger is None or not registry.log_model:
        return
    logger.record_model(model, tokenizer)
    if registry.registered_model_name:
        logger.record_registration(registry.registered_model_name, registry.champion_alias, registry.champion_metric)
