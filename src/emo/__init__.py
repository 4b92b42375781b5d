"""emo: fine-tune Hugging Face encoders on the CARER emotion dataset, tracked in MLflow."""

import time

__version__ = "0.1.0"
STARTED = time.monotonic()  # before torch, Lightning and the rest load: start-up is measured from here


class UserError(Exception):
    """Something the user can fix (a path, a file, a setting, a server): `emo` prints it as one line, exit status 1."""

    exit_status = 1


class UsageError(UserError):
    """The command line or a config file: one line, exit status 2 (as for a usage error)."""

    exit_status = 2
