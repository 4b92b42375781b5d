"""Hugging Face Hub access: local folders first, and a quick check before any download.

Without this check an unreachable Hub costs a minute of retries and a long traceback;
with it the run stops in seconds with one line that says what to do.
"""

import contextlib
import functools
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from huggingface_hub import constants

from emo import UserError, first_line

OFFLINE_HINT = (
    "to run without the Hub add --config configs/offline.yaml (local MiniLM and data), "
    "or set HF_HUB_OFFLINE=1 to use copies already in the Hugging Face cache"
)


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class HubUnreachableError(UserError):
    """The Hub is needed for a model, tokenizer or dataset and cannot be reached."""


class LocalPathError(UserError):
    """A model or data path that is meant to be local does not exist or is not what it should be."""


def is_local(name: str) -> bool:
    return Path(name).expanduser().exists()


def looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else is meant as a local path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


@functools.cache
def hub_reachable(timeout_s: float = 5.0) -> bool:
    request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout_s)  # honours HTTPS_PROXY like the Hub client
    except urllib.error.HTTPError:
        return True  # the server answered
    except (OSError, ValueError):
        return False
    return True


def require(name: str, what: str) -> None:
    """Fail fast unless `name` is a local folder or the Hub can be asked for it."""
    if is_local(name):
        return
    if looks_like_path(name):
        raise LocalPathError(f"{what} {name!r}: no such local file or folder")
    if constants.is_offline_mode():
        return  # the libraries load from their cache and fail fast when it is missing
    if not hub_reachable():
        raise HubUnreachableError(
            f"cannot reach the Hugging Face Hub ({constants.ENDPOINT}) to load the {what} {name!r} "
            f"(no local folder of that name either); {OFFLINE_HINT}"
        )


def check_model_folder(name: str) -> None:
    """A local model folder holds a config and weights, before anything is loaded from it."""
    require(name, "model")
    folder = Path(name).expanduser()
    if not is_local(name):
        return  # a Hub id, reachable
    if not folder.is_dir():
        raise LocalPathError(
            f"model {name!r} is a file; give the folder written by save_pretrained (config.json, weights, tokenizer)"
        )
    config = folder / "config.json"
    if not config.is_file():
        raise LocalPathError(f"model folder {name!r} has no config.json: not a Hugging Face model folder")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise LocalPathError(f"{config}: not valid JSON ({error})") from None
    if not any((folder / weights).is_file() for weights in WEIGHT_FILES):
        raise LocalPathError(f"model folder {name!r} has no weights ({' or '.join(WEIGHT_FILES[::2])})")


def max_positions(name: str) -> int | None:
    """How many tokens a local model folder's encoder takes (None when its config does not say, or for Hub ids)."""
    config = Path(name).expanduser() / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")


def from_pretrained(cls, name: str, what: str, **kwargs):
    """`cls.from_pretrained(name)`, with the check above and one-line errors for what a user can fix."""
    require(name, what)
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        if constants.is_offline_mode() and not is_local(name):
            raise HubUnreachableError(
                f"the {what} {name!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {OFFLINE_HINT}"
            ) from error
        if is_local(name):
            raise LocalPathError(f"the {what} in {name!r} cannot be loaded: {first_line(error)}") from error
        raise
    except Exception as error:  # safetensors and tokenizers raise their own types for damaged files
        if is_local(name) and type(error).__module__.split(".")[0] in ("safetensors", "tokenizers", "builtins"):
            raise LocalPathError(f"the {what} in {name!r} cannot be loaded: {first_line(error)}") from error
        raise


@contextlib.contextmanager
def offline_unless_reachable(name: str):
    """Hub offline mode for calls that only look up extras (MLflow fetches a model card and licence).

    Keeps a local or unreachable model from costing a minute of retries.
    """
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or is_local(name) or not hub_reachable()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous
