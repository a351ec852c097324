"""Local files into memory-mapped Arrow with `datasets`' own builders, cached by fingerprint.

JSON and JSON Lines go through the `json` builder, CSV and TSV through the `csv` builder, and token-per-line CoNLL
through a generator (`Dataset.from_generator`) over [`read_conll`]. Each builder's cache key covers the file's
path, size and modification time, so an edited file is read again and an unchanged one is not. The rows keep the
file's own columns and raw values (strings, lists of strings): mapping them onto tasks is done by `sources.py`, and
a file the builder cannot parse is diagnosed there, with the line-numbered readers of `readers.py`.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, Features, List, Value

from .readers import read_conll, read_lines


def conll_examples(
    path: str, encoding: str, columns: tuple[str, ...], token_prefix: str | None, size: int, mtime_ns: int
) -> Iterator[dict[str, list[str]]]:
    """The sentences of a CoNLL file, as `Dataset.from_generator` wants them.

    `size` and `mtime_ns` are not read: as generator arguments they enter the builder's fingerprint, so that the
    cache is invalidated when the file changes.
    """
    for _, sentence in read_conll(path, encoding, list(columns), token_prefix):
        yield sentence


def _builder_encoding(path: str, encoding: str) -> str:
    """`utf-8-sig` for a UTF-8 file that starts with a byte order mark (the builders would keep it), else as given."""
    if codecs.lookup(encoding).name != "utf-8":
        return encoding
    with open(path, "rb") as handle:
        return "utf-8-sig" if handle.read(3) == codecs.BOM_UTF8 else encoding


def _starts_with_object(path: str, encoding: str) -> bool:
    """Whether a JSON file holds one object (`{"data": [...]}`) rather than an array."""
    with open(path, encoding=encoding, errors="replace") as handle:
        head = handle.read(4096).lstrip("\ufeff \t\r\n")
    return head.startswith("{")


def load_file(
    path: str,
    file_format: str,
    encoding: str = "utf-8",
    conll_columns: list[str] | None = None,
    token_prefix: str | None = None,
    cache_dir: str | None = None,
) -> Dataset:
    """Reads one local file into a memory-mapped `Dataset` of its raw records (cached).

    Args:
        path (`str`): The file.
        file_format (`str`): `conll`, `tsv`, `csv`, `json` or `jsonl`.
        encoding (`str`, *optional*, defaults to `"utf-8"`): The file's text encoding.
        conll_columns (`list[str]`, *optional*, defaults to `["tokens", "tags"]`): Names of a CoNLL line's fields.
        token_prefix (`str`, *optional*): Prefix stripped from every CoNLL token.
        cache_dir (`str`, *optional*): The `datasets` cache folder (default: `HF_DATASETS_CACHE`).

    Returns:
        `Dataset`: one row per record; CSV/TSV cells stay strings (no number or `NA` guessing), an empty cell is
        `""`, and blank lines are skipped.

    Raises:
        Whatever the builder raises on a file it cannot parse (the caller locates the line).
    """
    if file_format == "conll":
        columns = conll_columns or ["tokens", "tags"]
        stat = Path(path).stat()
        return Dataset.from_generator(
            conll_examples,
            features=Features({name: List(Value("string")) for name in columns}),
            cache_dir=cache_dir,
            gen_kwargs={
                "path": str(Path(path).resolve()),
                "encoding": encoding,
                "columns": tuple(columns),  # a list would be split into shards, one per item
                "token_prefix": token_prefix,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            },
        )
    encoding = _builder_encoding(path, encoding)
    options: dict[str, Any]
    if file_format in ("tsv", "csv"):
        delimiter = "\t" if file_format == "tsv" else ","
        quoting = csv.QUOTE_NONE if file_format == "tsv" else csv.QUOTE_MINIMAL
        header = next(csv.reader(read_lines(path, encoding), delimiter=delimiter, quoting=quoting))
        # Every column as text, as the file holds it: no guessing of numbers or of `NA`/`null` as missing.
        options = {
            "sep": delimiter,
            "quoting": quoting,
            "keep_default_na": False,
            "features": Features({name: Value("string") for name in header}),
        }
        builder = "csv"
    else:
        options = {"field": "data"} if file_format == "json" and _starts_with_object(path, encoding) else {}
        builder = "json"
    return datasets.load_dataset(
        builder, data_files={"train": str(path)}, split="train", encoding=encoding, cache_dir=cache_dir, **options
    )
