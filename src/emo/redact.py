"""Secrets never reach the record: values of credential variables and passwords in URLs are masked.

Applied to everything emo writes into a run or its journal as text: params, tags, the config
dump and the other text artifacts, and the tracking URI kept in the journal.
"""

import os
import re

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|API_KEY|AUTH", re.IGNORECASE)
URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
MASK = "***"


def secret_values() -> list[str]:
    """Values of environment variables named like credentials (MLflow, Hugging Face, cloud), longest first."""
    values = {value for name, value in os.environ.items() if SECRET_NAME.search(name) and len(value) >= 6}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, MASK)
    return URL_USERINFO.sub(MASK + "@", text)
