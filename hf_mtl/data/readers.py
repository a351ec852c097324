"""Readers for local files. Each yields `(where, record)` so that errors can name the line at fault."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import HfMtlError

FORMATS = ("conll", "tsv", "csv", "json", "jsonl")
_SUFFIX_FORMATS = {".conll": "conll", ".tsv": "tsv", ".csv": "csv", ".json": "json", ".jsonl": "jsonl"}

# (where, record): `where` is `file:line` (or `file[item]` for a JSON array), for error messages.
Record = tuple[str, dict[str, Any]]


def infer_format(path: str, declared: str | None) -> str:
    if declared is not None:
        if declared not in FORMATS:
            raise HfMtlError(f"{path}: unknown format {declared!r}; expected one of {list(FORMATS)}")
        return declared
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise HfMtlError(f"{path}: cannot tell the format from the name; set `format` to one of {list(FORMATS)}")
    return _SUFFIX_FORMATS[suffix]


def read_lines(path: str, encoding: str) -> Iterator[str]:
    """The file's lines, decoded one at a time (memory stays flat however large the file), without a leading BOM.

    Raises [`HfMtlError`] naming the line of the first byte that does not decode, and for a file without a
    non-blank line (after reading it all).
    """
    file = Path(path)
    if not file.is_file():
        raise HfMtlError(f"{path}: no such file")
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise HfMtlError(f"{path}: unknown encoding {encoding!r}") from None
    blank = True
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = decoder.decode(raw)
            except UnicodeDecodeError as err:
                raise HfMtlError(
                    f"{path}:{number}: not valid {encoding} (byte {err.object[err.start]:#x}); "
                    "set `encoding` (for example latin-1)"
                ) from None
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            line = line.rstrip("\r\n")
            blank = blank and not line.strip()
            yield line
    if blank:
        raise HfMtlError(f"{path}: the file is empty")


def read_conll(path: str, encoding: str, columns: list[str], token_prefix: str | None) -> Iterator[Record]:
    """Token-per-line files: one token and its tags per line, whitespace- or tab-separated, a blank line between
    sentences. `columns` names the fields (`["tokens", "tags"]` by default); `-DOCSTART-` lines are skipped."""
    sentence: dict[str, list[str]] = {name: [] for name in columns}
    start = 0
    for number, line in enumerate(read_lines(path, encoding), start=1):
        if not line.strip():
            if sentence[columns[0]]:
                yield f"{path}:{start}", sentence
            sentence = {name: [] for name in columns}
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [field.strip() for field in fields]
        if fields[0] == "-DOCSTART-":
            continue
        if len(fields) != len(columns):
            raise HfMtlError(
                f"{path}:{number}: expected {len(columns)} fields ({', '.join(columns)}), "
                f"found {len(fields)}: {line!r}"
            )
        if not all(fields):
            empty = columns[fields.index("")]
            raise HfMtlError(f"{path}:{number}: the {empty} field is empty: {line!r}")
        if token_prefix and fields[0].startswith(token_prefix):
            fields[0] = fields[0][len(token_prefix) :]
        if not sentence[columns[0]]:
            start = number
        for name, value in zip(columns, fields):
            sentence[name].append(value)
    if sentence[columns[0]]:
        yield f"{path}:{start}", sentence


def read_delimited(path: str, encoding: str, delimiter: str) -> Iterator[Record]:
    """CSV/TSV with a header row naming the columns."""
    lines = read_lines(path, encoding)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    header = next(reader)
    for number, row in enumerate(reader, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise HfMtlError(
                f"{path}:{number}: expected {len(header)} columns ({', '.join(header)}), found {len(row)}"
            )
        yield f"{path}:{number}", dict(zip(header, row))


def read_json(path: str, encoding: str, lines_format: bool) -> Iterator[Record]:
    """JSON Lines (one object per line) or a JSON file holding a list of objects."""
    lines = read_lines(path, encoding)
    if lines_format:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise HfMtlError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise HfMtlError(f"{path}:{number}: expected a JSON object, found {type(record).__name__}")
            yield f"{path}:{number}", record
        return
    try:
        records = json.loads("\n".join(lines))
    except json.JSONDecodeError as err:
        raise HfMtlError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if isinstance(records, dict) and "data" in records:
        records = records["data"]
    if not isinstance(records, list):
        raise HfMtlError(f"{path}: expected a list of objects (or {{'data': [...]}}), found {type(records).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise HfMtlError(f"{path}: item {index} is not a JSON object")
        yield f"{path}[{index}]", record


def read_records(
    path: str, file_format: str, encoding: str, conll_columns: list[str], token_prefix: str | None
) -> Iterator[Record]:
    if file_format == "conll":
        return read_conll(path, encoding, conll_columns, token_prefix)
    if file_format in ("tsv", "csv"):
        return read_delimited(path, encoding, "\t" if file_format == "tsv" else ",")
    return read_json(path, encoding, lines_format=file_format == "jsonl")


def count_records(path: str, file_format: str, encoding: str) -> int:
    """How many records `read_records` would yield, from one pass over the raw bytes (no parsing, nothing kept):
    non-blank lines of JSON Lines, non-blank lines after the header of CSV/TSV, blank-line-separated sentences of
    CoNLL (`-DOCSTART-` lines aside). A JSON array is parsed, since it has no line structure.

    A CSV field quoted across several lines counts once per line: the count sizes mixing probabilities, it does
    not validate.
    """
    if file_format == "json":
        return sum(1 for _ in read_json(path, encoding, lines_format=False))
    if not Path(path).is_file():
        raise HfMtlError(f"{path}: no such file")
    count, in_sentence = 0, False
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.strip()
            if file_format != "conll":
                count += bool(line)
            elif not line:
                in_sentence = False
            elif not line.startswith(b"-DOCSTART-") and not in_sentence:
                count, in_sentence = count + 1, True
    return count - 1 if file_format in ("tsv", "csv") and count else count
