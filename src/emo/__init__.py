"""emo: fine-tune Hugging Face encoders on the CARER emotion dataset, tracked in MLflow."""

import time

__version__ = "0.1.0"
STARTED = time.monotonic()  # before torch, Lightning and the rest load: start-up is measured from here


def first_line(what: BaseException | str, limit: int | None = 300) -> str:
    """The first line of a message (of an error: its text, else its type's name), cut at `limit` characters: what emo
    prints of a library's long, many-line errors (its own, `UserError`, in full: `limit=None`)."""
    text = str(what).strip() or (type(what).__name__ if isinstance(what, BaseException) else "")
    return text.splitlines()[0][:limit] if text else ""


class UserError(Exception):
    """Something the user can fix (a path, a file, a setting, a server): `emo` prints it as one line, exit status 1."""

    exit_status = 1


class UsageError(UserError):
    """The command line or a config file: one line, exit status 2 (as for a usage error)."""

    exit_status = 2
