"""emo: fine-tune Hugging Face encoders on the CARER emotion dataset, tracked in MLflow."""

__version__ = "0.1.0"


class UserError(Exception):
    """Something the user can fix (a path, a file, a setting, a server): `emo` prints it as one line."""
