"""Secrets never reach the record: credentials are masked in everything emo writes into a run or its journal.

Applied to params, tags, the config dump and the other text artifacts, the run record in checkpoints,
the tracking URI kept in the journal, and the lines emo prints. The rule, exactly (`is_secret_name`, `redact`):

- A name is credential-like when, cut into words (at `_`, `.`, `-`, spaces and lower-to-upper case
  changes, upper-cased), it
  - contains PASSWORD, PASSWD, SECRET, CREDENTIAL, APIKEY, API_KEY, ACCESS_KEY, PRIVATE_KEY or
    CONNECTION_STRING anywhere (`PGPASSWORD`, `MY_APIKEY`, `AWS_SECRET_ACCESS_KEY`, `AccountKey`...);
  - has a word PWD, PASS, PW, TOKEN, KEY, DSN, AUTH, AUTHORIZATION, BEARER or COOKIE (`DB_PASS`,
    `MYSQL_PWD`, `HF_TOKEN`, `AZURE_STORAGE_KEY`, `SENTRY_DSN`, `AUTH`);
  - begins with AUTH (not AUTHOR) or ends in DSN (`AUTH_HEADER`, `AUTHTOKEN`, `PGDSN`).
  Not credential-like: `tokenizer_name`, `max_tokens`, `author`, `passes`.
- The value (6 characters or more) of every environment variable with a credential-like name is
  masked wherever it appears; but for the shell's working directory `PWD` (a word PWD, not a password:
  masked, every path under it would read `***/...`; `OLDPWD` is no credential-like name).
- A value of any length is masked where a secret is known to stand:
  - the password of a URL, any scheme (`http://user:***@host`, `postgresql+psycopg://user:***@host/db`,
    `mysql://user:***@host`); userinfo without a password (`https://***@host`) is masked whole;
  - what follows a credential-like name and `=` or `:` in text (`password=***`, `api_key: ***`,
    `DSN: ***`, `AUTH=***`, `connection_string=***`, `AccountKey=***;` in a connection string): a quoted value
    to its closing quote, spaces and all (`dsn: '***'`); after `:`, the rest of the line; after `=`, one word;
  - an HTTP credential after `Bearer ` or `Basic ` (`Authorization: Bearer ***`);
  - the value of a param or tag whose own name (its last dotted part) is credential-like (`tags.api_token`).
Shorter environment values are not masked anywhere else: three letters would mask every word that holds them.
"""

import os
import re

# Anywhere in the name (upper-cased, words joined by `_`).
SECRET_PARTS = (
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "CREDENTIAL",
    "APIKEY",
    "API_KEY",
    "ACCESS_KEY",
    "PRIVATE_KEY",
    "CONNECTION_STRING",
)
# One of the name's words.
SECRET_WORDS = {"PWD", "PASS", "PW", "TOKEN", "KEY", "DSN", "AUTH", "AUTHORIZATION", "BEARER", "COOKIE"}
SECRET_ENDS = re.compile(r"^AUTH(?!OR)|DSN$")
WORD_BREAK = re.compile(r"[_.\-\s]+|(?<=[a-z0-9])(?=[A-Z])")

# `name=value` or `name: value` in text (quotes allowed around the name, as in JSON); the name is then checked.
KEYED = re.compile(
    r"""(?<![\w.-])(?P<name>[A-Za-z][\w.-]*)(?P<between>["']?\s*(?P<sep>[=:])\s*)(?!//)"""
    r"""(?:(?P<quote>["'])(?P<quoted>[^\n]*?)(?P=quote)|(?P<plain>[^\s;,&'"}\]][^\n;,&'"}\]]*))"""
)
HTTP_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)(\s+)([\w.~+/=-]+)")
URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]+):[^/@\s]+@")  # user:password@
URL_USERINFO = re.compile(r"(?<=://)[^/@:\s]+@")  # a token alone as userinfo: token@
MASK = "***"
MIN_ANYWHERE = 6
SHELL_DIRECTORIES = ("PWD",)  # an environment variable named like a password that holds the shell's directory


def words(name: str) -> list[str]:
    return [word.upper() for word in WORD_BREAK.split(name) if word]


def is_secret_name(name: str) -> bool:
    """Whether a name (an environment variable, a param or tag, a key in text) is credential-like: see the module."""
    parts = words(name)
    joined = "_".join(parts)
    return (
        any(part in joined for part in SECRET_PARTS)
        or any(word in SECRET_WORDS for word in parts)
        or bool(SECRET_ENDS.search(joined))
    )


def environment() -> dict[str, str]:
    """A copy of the environment, whole even while another thread changes it (MLflow sets and removes variables while
    the journal's sender logs a model): a copy that a change broke is taken again."""
    while True:
        try:
            return dict(os.environ)
        except (RuntimeError, KeyError):  # the variables changed in number, or one went, during the copy
            continue


def secret_values() -> list[str]:
    """Values of environment variables named like credentials (MLflow, Hugging Face, cloud, databases), longest first."""
    values = {
        value
        for name, value in environment().items()
        if len(value) >= MIN_ANYWHERE and is_secret_name(name) and name not in SHELL_DIRECTORIES
    }
    return sorted(values, key=len, reverse=True)


def mask_keyed(match: re.Match) -> str:
    """`name: value` or `name=value` with the value masked when the name is credential-like: a quoted value to its
    closing quote, spaces and all; after `=`, an unquoted value to the first space; after `:`, to the end of the line
    (a YAML or log line: `dsn: DSN: user secret words`). A `;`, `,`, `&`, `}` or `]` ends an unquoted value."""
    if not is_secret_name(match["name"]):
        return match.group(0)
    if match["quote"]:
        value = match["quoted"]
        masked = match["quote"] + MASK + match["quote"]
        return match.group(0) if value == MASK else match["name"] + match["between"] + masked
    value, rest = match["plain"].rstrip(), match["plain"][len(match["plain"].rstrip()) :]
    if match["sep"] == "=":
        value, space, after = value.partition(" ")
        rest = space + after + rest
    return match.group(0) if value == MASK else match["name"] + match["between"] + MASK + rest


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, MASK)
    text = URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    text = URL_USERINFO.sub(MASK + "@", text)
    text = HTTP_CREDENTIAL.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    return KEYED.sub(mask_keyed, text)


def redact_item(name: str, value) -> str:
    """A param's or tag's value: masked whole when its name is credential-like, else as text."""
    text = str(value)
    return MASK if text and is_secret_name(name.rsplit(".", 1)[-1]) else redact(text)


def without_userinfo(uri: str) -> str:
    """The URI without `user:password@`: where to send, without the secret (credentials come at sending time)."""
    return re.sub(r"(?<=://)[^/@\s]+@", "", uri)
