"""What `emo serve` takes and answers: MLflow's scoring protocol for texts, and the limits of one request.

A request is JSON with exactly one of MLflow's input fields, holding texts: `{"inputs": ["a text", ...]}` (or one
text as a string), `{"instances": [...]}`, `{"dataframe_split": {"columns": ["text"], "data": [["a text"], ...]}}`
or `{"dataframe_records": [{"text": "a text"}, ...]}`. Anything else is a `BadRequest` (HTTP 400) whose message says
what is wrong, found before the request is queued: it never reaches the model. The answer to each text is the
export's (`emo.export.served.answers`).
"""

import dataclasses
import json

from emo.export.served import NotTexts, checked_texts

INPUT_FIELDS = ("inputs", "instances", "dataframe_split", "dataframe_records")
EXAMPLE = '{"inputs": ["a text", ...]}'


class BadRequest(ValueError):
    """A request the server refuses (HTTP 400); the message is the answer's."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """The most one request may hold.

    Args:
        max_texts: Texts in one request; more is a 400 (send them in several requests).
        max_text_chars: Characters in one text; more is a 400. A text within it but over the model's max_length
            tokens is read as its first max_length tokens, as in training and `emo predict`.
    """

    max_texts: int = 256
    max_text_chars: int = 10_000

    @property
    def max_body_bytes(self) -> int:
        """The largest body worth reading: every text at its longest, 4 bytes a character, and the JSON around."""
        return self.max_texts * (4 * self.max_text_chars + 16) + 4096


def texts_of(body: bytes, limits: Limits) -> list[str]:
    """The texts of a request's body, checked against `limits`; a `BadRequest` says what is wrong."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"the body is not JSON: send {EXAMPLE}") from None
    if not isinstance(payload, dict):
        raise BadRequest(f"expected a JSON object with one of {', '.join(INPUT_FIELDS)}, as {EXAMPLE}")
    given = [field for field in INPUT_FIELDS if field in payload]
    others = sorted(set(payload) - set(INPUT_FIELDS))
    if len(given) != 1 or others:
        found = f"; got {', '.join(repr(key) for key in payload) or 'an empty object'}"
        raise BadRequest(f"expected exactly one of {', '.join(INPUT_FIELDS)}, as {EXAMPLE}{found}")
    field = given[0]
    try:
        texts = checked_texts(column(field, payload[field]))
    except NotTexts as error:
        raise BadRequest(str(error)) from None
    if len(texts) > limits.max_texts:
        raise BadRequest(f"{len(texts)} texts in one request, more than {limits.max_texts}: send them in several")
    for i, text in enumerate(texts):
        if len(text) > limits.max_text_chars:
            raise BadRequest(
                f"input {i} has {len(text)} characters, more than the {limits.max_text_chars} one text may"
            )
    return texts


def column(field: str, value):
    """The one column of texts an input field holds (`checked_texts` checks what is in it)."""
    if field in ("inputs", "instances"):
        if value is None or isinstance(value, (str, list)):
            return [value] if value is None else value
        raise BadRequest(f"{field}: expected a list of texts, got {type(value).__name__}")
    if field == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise BadRequest('dataframe_split: expected {"columns": ["text"], "data": [["a text"], ...]}')
        columns = value.get("columns", [None])
        if not isinstance(columns, list) or len(columns) != 1:
            raise BadRequest(f"dataframe_split: expected one column of texts, got columns {columns!r}")
        if not all(isinstance(row, list) and len(row) == 1 for row in value["data"]):
            raise BadRequest('dataframe_split: expected one text a row, as [["a text"], ...]')
        return [row[0] for row in value["data"]]
    if not isinstance(value, list) or not all(isinstance(row, dict) and len(row) == 1 for row in value):
        raise BadRequest('dataframe_records: expected one text a record, as [{"text": "a text"}, ...]')
    return [next(iter(row.values())) for row in value]
