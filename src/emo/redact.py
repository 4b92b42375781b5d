"""Secrets never reach the record: credentials are masked in everything emo writes into a run or its journal.

Applied to params, tags, the config dump and the other text artifacts, and the tracking URI kept in
the journal. The rule, exactly:
- the value (6 characters or more) of every environment variable named like a credential is masked
  wherever it appears; names like a credential contain PASSWORD, PASSWD, TOKEN, SECRET, CREDENTIAL,
  PRIVATE_KEY, ACCESS_KEY, API_KEY, AUTH or CONNECTION_STRING, or end in KEY or DSN
  (`AZURE_STORAGE_KEY`, `OPENAI_API_KEY`, `HF_TOKEN`, `DATABASE_DSN`, ...);
- a value of any length is masked where a secret is known to stand: the password of a URL
  (`scheme://user:***@host`), what follows a credential-like name and `=` or `:` in text
  (`password=...`, `api_key: ...`, `AccountKey=...;` in a connection string), and the value of a
  param or tag whose own name is credential-like.
Shorter environment values are not masked anywhere else: three letters would mask every word that holds them.
"""

import os
import re

# A credential-like name: one of these words between underscores, dots or the ends (`tokenizer_name` is not one).
SECRET_NAME = re.compile(r"(?:^|[_.])(?:PASSWORD|PASSWD|PWD|TOKEN|SECRET|CREDENTIALS?|AUTH|KEY|DSN|CONNECTION_STRING)(?:$|[_.])",
                         re.IGNORECASE)  # fmt: skip
# `name=value` or `name: value` in text, with a credential-like name (the last word before = or :).
KEYED_SECRET = re.compile(r"(?i)\b([\w.-]*(?:password|passwd|pwd|token|secret|credentials?|api[_-]?key|access[_-]?key"
                          r"|private[_-]?key|accountkey|sharedaccesskey|_key))(\s*[=:]\s*)([^\s;,&'\"}]+)")  # fmt: skip
URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]+):[^/@\s]+@")
MASK = "***"
MIN_ANYWHERE = 6


def secret_values() -> list[str]:
    """Values of environment variables named like credentials (MLflow, Hugging Face, cloud), longest first."""
    values = {value for name, value in os.environ.items() if SECRET_NAME.search(name) and len(value) >= MIN_ANYWHERE}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, MASK)
    text = KEYED_SECRET.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    return URL_USERINFO.sub(MASK + "@", text)


def redact_item(name: str, value) -> str:
    """A param's or tag's value: masked whole when its name is credential-like, else as text."""
    text = str(value)
    return MASK if text and SECRET_NAME.search(name.rsplit(".", 1)[-1]) else redact(text)


def without_userinfo(uri: str) -> str:
    """The URI without `user:password@`: where to send, without the secret (credentials come at sending time)."""
    return URL_USERINFO.sub("", uri)
