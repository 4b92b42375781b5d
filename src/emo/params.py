"""Settings as MLflow params: a nested config flattened to dotted keys, values as text within MLflow's limit."""

from emo.redact import redact_item

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def flatten(tree, prefix: str = "") -> dict:
    """`{"model": {"lr": 1}}` -> `{"model.lr": 1}`; list items get their index."""
    if isinstance(tree, dict) and tree:
        items = tree.items()
    elif isinstance(tree, list | tuple) and tree:
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def param_value(name: str, value) -> str:
    """A value as MLflow keeps it: text, secrets masked (all of it under a credential-like name), cut at MLflow's limit."""
    return redact_item(name, value)[:MAX_PARAM_LENGTH]


def run_settings(config) -> dict[str, str]:
    """Every setting of a resolved config (a jsonargparse Namespace), as the run's params hold them."""
    settings = config.clone().as_dict()
    settings.pop("config", None)  # the files it came from: a tag, not a setting
    for linked in ("label_names", "optimizer", "lr_scheduler"):  # the classes, from the data; the rest, top-level
        settings.get("model", {}).pop(linked, None)
    return {key: param_value(key, value) for key, value in flatten(settings).items()}
