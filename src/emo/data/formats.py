"""Labelled texts read from files: the CARER authors' `text;label` lines and table exports, every example checked.

A split file is `.txt` (the original `<text>;<label>` a line), `.csv`, `.jsonl` (an object a line),
`.json` (a list of objects) or `.parquet`, with the columns `text` and `label` (label as a name, or as
an id into `data.labels`), all text in UTF-8. A reader yields `text`, `label` (as written) and `where`
(file and line, for later messages). A bad example stops the run with one `DataFormatError` line that
names its file and line. A new format is a reader function and a line in `READERS`.
"""

import codecs
import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa

from emo import UserError


class DataFormatError(UserError, ValueError):
    """A data file that cannot be read as emotion examples."""


JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
}


def json_type(value) -> str:
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


def at_line(path: Path, line: int) -> str:
    """`train.txt:3` for the authors' format (as compilers write it), `train.csv: line 3` for exports."""
    return f"{path}:{line}" if path.suffix == ".txt" else f"{path}: line {line}"


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a missing, folder or unreadable path is one line, not an OSError traceback."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataFormatError(f"{path} is a folder, not a file") from None
    except OSError as error:
        raise DataFormatError(f"{path}: cannot read ({error.strerror or error})") from None


def line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte, lines split as the readers split them."""
    lines = io.StringIO(data[:offset].decode("utf-8", errors="replace"), newline=None).read().split("\n")
    return len(lines), len(lines[-1]) + 1


def decode_text(path: Path, data: bytes) -> str:
    """UTF-8 text (a leading byte order mark dropped); other bytes are named by line, not by a UnicodeDecodeError."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataFormatError(f"{path}: UTF-16 text, not UTF-8; save the file as UTF-8")
    nul = data.find(b"\0")
    if nul >= 0:  # text never holds NUL bytes; zip, png, gzip, ... files do, near the start
        raise DataFormatError(
            f"{path}: binary content (a NUL byte at line {line_and_column(data, nul)[0]}), not a text file"
        )
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line, column = line_and_column(data, error.start)
        byte = f"byte 0x{data[error.start]:02x} at column {column}"
        raise DataFormatError(f"{at_line(path, line)}: not UTF-8 text ({byte}); save the file as UTF-8") from None


def read_text(path: Path) -> str:
    return decode_text(path, read_bytes(path))


def text_lines(text: str) -> Iterator[tuple[int, str]]:
    """Numbered lines split at \\n, \\r\\n or \\r, as Python's text files split them (not at \\u2028 and the like)."""
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):
        yield number, line.rstrip("\n")


def split_bytes(path: Path) -> bytes:
    data = read_bytes(path)
    if not data.strip():  # found here, not by datasets' "corresponds to no data" after the fact
        raise DataFormatError(f"{path}: no examples (the file is empty or blank)")
    return data


def split_text(path: Path) -> str:
    return decode_text(path, split_bytes(path))


def label_name(value, where: str) -> str:
    """A label as the file gives it: a name (`joy`) or an id (`1`, an index into `data.labels`); `1.0`, `true`, null or
    an empty value are not labels. Which names exist is the data's to say (`emo.data.labels`), not the reader's."""
    text = str(value).strip()
    if value is None or value is pd.NA or isinstance(value, bool | float) or not text:
        raise DataFormatError(f"{where}: unknown label {str(value)!r} (a label is a name or an id)")
    return text


def checked_example(text, label, where: str) -> dict:
    if not isinstance(text, str):
        raise DataFormatError(f"{where}: expected text, got {text!r}")
    if not text.strip():
        raise DataFormatError(f"{where}: empty text")
    return {"text": text, "label": label_name(label, where), "where": where}


def check_columns(columns, where: str) -> None:
    """Exactly `text` and `label`: a missing one cannot be read, an extra one would be dropped unseen."""
    columns = [str(column) for column in columns]
    missing = [column for column in ("text", "label") if column not in columns]
    if missing:
        raise DataFormatError(f"{where}: missing column(s) {', '.join(missing)} (has {', '.join(columns) or 'none'})")
    extra = [column for column in columns if column not in ("text", "label")]
    if extra:
        raise DataFormatError(f"{where}: unexpected column(s) {', '.join(extra)}; keep only text and label")
    repeated = [column for column, count in Counter(columns).items() if count > 1]
    if repeated:
        raise DataFormatError(f"{where}: repeated column(s) {', '.join(repeated)}")


def read_txt_examples(path: Path) -> Iterator[dict]:
    """The authors' format: `<text>;<label>` a line; blank lines are skipped."""
    for line_number, line in text_lines(split_text(path)):
        if not line.strip():
            continue
        text, separator, label = line.rpartition(";")
        if not separator:
            raise DataFormatError(f"{path}:{line_number}: expected '<text>;<label>', got {line[:60]!r}")
        yield checked_example(text, label, f"{path}:{line_number}")


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of each non-blank row, numbered by the line it starts on (a quoted field may span lines)."""
    rows, line = csv.reader(io.StringIO(split_text(path), newline=""), strict=True), 1
    try:
        for fields in rows:
            if fields:
                yield line, fields
            line = rows.line_num + 1
    except csv.Error as error:
        raise DataFormatError(f"{path}: line {line}: not valid CSV ({error})") from None


def read_csv_examples(path: Path) -> Iterator[dict]:
    # The csv module, not pandas: pandas pads a row with too few fields with empty strings, and skipped blank
    # lines would shift every line number after them.
    rows = csv_rows(path)
    _, header = next(rows, (1, []))
    check_columns(header, str(path))
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataFormatError(f"{path}: line {line}: expected {len(header)} fields, found {len(fields)}")
        record = dict(zip(header, fields, strict=True))
        yield checked_example(record["text"], record["label"], f"{path}: line {line}")


def record_example(record, where: str) -> dict:
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: expected an object with text and label, got {json_type(record)}")
    check_columns(record, where)
    return checked_example(record["text"], record["label"], where)


def read_jsonl_examples(path: Path) -> Iterator[dict]:
    for line_number, line in text_lines(split_text(path)):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"{path}: line {line_number}: not valid JSON ({error.msg} at column {error.colno})"
            ) from None
        yield record_example(record, f"{path}: line {line_number}")


def read_json_examples(path: Path) -> Iterator[dict]:
    try:
        records = json.loads(split_text(path))
    except json.JSONDecodeError as error:
        raise DataFormatError(
            f"{path}: line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    if not isinstance(records, list):
        raise DataFormatError(
            f'{path}: expected a list of records [{{"text": ..., "label": ...}}, ...], got {json_type(records)}'
        )
    for row, record in enumerate(records, start=1):
        yield record_example(record, f"{path}: row {row}")


def read_parquet_examples(path: Path) -> Iterator[dict]:
    try:  # the pyarrow backend keeps an integer column with nulls integer (numpy's would make every label 1.0)
        table = pd.read_parquet(io.BytesIO(split_bytes(path)), dtype_backend="pyarrow")
    except pa.ArrowException as error:
        reason = str(error).split(": ")[-1].split(". ")[0]  # "Parquet magic bytes not found in footer"
        raise DataFormatError(f"{path}: not a Parquet file ({reason})") from None
    check_columns(table.columns, str(path))
    for row, (text, label) in enumerate(zip(table["text"], table["label"], strict=True), start=1):
        yield checked_example(text, label, f"{path}: row {row}")


READERS = {  # a file's suffix -> its reader: a new format is a reader and a line here
    ".txt": read_txt_examples,
    ".csv": read_csv_examples,
    ".jsonl": read_jsonl_examples,
    ".json": read_json_examples,
    ".parquet": read_parquet_examples,
}
FILE_SUFFIXES = tuple(READERS)
# datasets keys a generator's cache by the function's name, not its code: this digest (of this file, the readers'
# code) makes stricter checks re-read, while edits elsewhere (the sampler, the data module) keep the cache.
READER_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def read_table_examples(path: Path) -> Iterator[dict]:
    """The examples of one split file, by its suffix (see READERS)."""
    yield from READERS[path.suffix](path)


def read_examples(path: str, sha256: str, reader: str) -> Iterator[dict]:
    """Generator behind `Dataset.from_generator`: the digests are arguments so edits of the file or of this module
    invalidate the cache."""
    path = Path(path)
    examples = read_table_examples(path)
    first = next(examples, None)
    if first is None:  # a csv header, `[]` or a parquet table without rows; blank files are refused earlier
        raise DataFormatError(f"{path}: no examples (the file has no rows)")
    yield first
    yield from examples
