"""Data sources: local files, Hub data sets or the embedded demo set, mapped onto the model's tasks.

A source yields, per split, rows with either `tokens` (a list of words) or `text`, plus word-level label ids for
the tasks it labels (`{task}_labels`). Which column holds what, and how raw labels map onto the task's label names,
is configuration (`text_column`, `tokens_column`, `label_columns`, `label_maps`), not one loader per data set.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from datasets import ClassLabel, Dataset, Features, IterableDataset, List, Sequence, Value

from ..errors import HfMtlError
from ..tasks import TaskSpec
from .arrow_files import load_file
from .readers import Record, count_records, infer_format, read_records

SPLITS = ("train", "validation", "test")
DEMO_DATASET = "hf_mtl:demo"
"""Reserved `dataset_name` of the embedded demo set (a colon cannot occur in a Hub id)."""
_DEMO_LABEL_COLUMNS = {"sentiment": "sentiment", "ner": "ner_tags"}
_SOURCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class DataSourceConfig:
    """Where one corpus comes from and which tasks it labels.

    Args:
        name (`str`): Short identifier (`sst2`, `wnut17`), used in logs and metric prefixes.
        dataset_name (`str`, *optional*): A Hub data set id, or `hf_mtl:demo` for the embedded demo set.
        dataset_config_name (`str`, *optional*): The Hub data set's configuration.
        revision (`str`, *optional*): The Hub data set's branch, tag or commit (default: its main branch).
        splits (`dict[str, str]`, *optional*): For a Hub data set, split name (`train`, `validation`, `test`) -> the
            Hub split to read there, in `datasets`' split syntax: `{"train": "train[:10%]", "validation":
            "validation[:500]"}`. Splits left out are not read. Default: `train`, `validation` and `test`, those the
            data set has.
        train_file (`str`, *optional*), validation_file (`str`, *optional*), test_file (`str`, *optional*):
            Local files, used instead of `dataset_name`.
        format (`str`, *optional*): `conll`, `tsv`, `csv`, `json` or `jsonl`; inferred from the file suffix if unset.
        encoding (`str`, *optional*, defaults to `"utf-8"`): Text encoding of the local files (`latin-1`, ...).
        text_column (`str`, *optional*): Column holding a raw sentence (sentence tasks only).
        tokens_column (`str`, *optional*): Column holding a list of words (needed by token tasks).
        label_columns (`dict[str, str]`): Task name -> column holding that task's labels (or tags).
        label_maps (`dict[str, dict[str, str]]`, *optional*): Task name -> {raw value: label name}, e.g.
            `{"sentiment": {"0": "negative", "1": "positive"}}`.
        conll_columns (`list[str]`, *optional*, defaults to `["tokens", "tags"]`): Names of the fields of a CoNLL line.
        token_prefix (`str`, *optional*): A prefix to strip from every CoNLL token (`en:` in WikiANN).
    """

    name: str
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    revision: str | None = None
    splits: dict[str, str] | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    format: str | None = None
    encoding: str = "utf-8"
    text_column: str | None = None
    tokens_column: str | None = None
    label_columns: dict[str, str] = field(default_factory=dict)
    label_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    conll_columns: list[str] = field(default_factory=lambda: ["tokens", "tags"])
    token_prefix: str | None = None

    @property
    def files(self) -> dict[str, str]:
        return {split: path for split in SPLITS if (path := getattr(self, f"{split}_file")) is not None}

    @property
    def origin(self) -> str:
        """The Hub id, `hf_mtl:demo`, or the local files, for logs and model cards."""
        return self.dataset_name or ", ".join(self.files.values())

    @classmethod
    def from_dict(cls, entry: dict[str, Any], tasks: list[TaskSpec], where: str = "datasets") -> DataSourceConfig:
        """Builds and validates a source from a config entry; errors name `where` (a file or flag)."""
        if not isinstance(entry, dict):
            raise HfMtlError(f"{where}: each data set must be a mapping, got {entry!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise HfMtlError(f"{where}: unknown data set key(s) {unknown}; allowed: {sorted(known)}")
        if not isinstance(entry.get("name"), str) or not _SOURCE_NAME.match(entry["name"]):
            raise HfMtlError(
                f"{where}: data set name {entry.get('name')!r} must be a letter then letters, digits or '_'"
            )
        source = cls(**entry)
        where = f"{where}[{source.name}]"
        if (source.dataset_name is None) == (not source.files):
            raise HfMtlError(f"{where}: give dataset_name or train_file/validation_file/test_file (one of the two)")
        if (source.revision is not None or source.splits is not None) and not _is_hub(source):
            raise HfMtlError(f"{where}: revision and splits apply to a Hub data set (dataset_name)")
        if source.splits is not None and not (isinstance(source.splits, dict) and set(source.splits) <= set(SPLITS)):
            raise HfMtlError(f"{where}: splits must map some of {list(SPLITS)} to Hub splits, got {source.splits!r}")
        if source.dataset_name == DEMO_DATASET:
            source._apply_demo_defaults(tasks)
        elif source.files:
            if all(infer_format(path, source.format) == "conll" for path in source.files.values()):
                source.tokens_column = source.tokens_column or source.conll_columns[0]
        source._validate(tasks, where)
        return source

    def _apply_demo_defaults(self, tasks: list[TaskSpec]) -> None:
        self.tokens_column = self.tokens_column or "tokens"
        if not self.label_columns:
            names = {task.name for task in tasks}
            self.label_columns = {task: column for task, column in _DEMO_LABEL_COLUMNS.items() if task in names}

    def _validate(self, tasks: list[TaskSpec], where: str) -> None:
        by_name = {task.name: task for task in tasks}
        if not self.label_columns:
            raise HfMtlError(f"{where}: label_columns is empty; map at least one task to a column")
        for task_name in list(self.label_columns) + list(self.label_maps):
            if task_name not in by_name:
                raise HfMtlError(
                    f"{where}: unknown task {task_name!r} in label_columns/label_maps; tasks: {list(by_name)}"
                )
        if (self.text_column is None) == (self.tokens_column is None):
            raise HfMtlError(f"{where}: set exactly one of text_column (raw sentences) or tokens_column (word lists)")
        token_tasks = [name for name in self.label_columns if by_name[name].is_token_task]
        if token_tasks and self.tokens_column is None:
            raise HfMtlError(f"{where}: token task(s) {token_tasks} need word lists; set tokens_column")


@dataclass
class LoadedSource:
    """A source's splits, each a `Dataset` of `tokens` or `text` plus `{task}_labels` for the tasks it labels.

    Args:
        config (`DataSourceConfig`): Where the rows came from.
        splits (`dict[str, Dataset | IterableDataset]`): Split name -> rows; with `streaming=True` the train split is
            an `IterableDataset`, the others stay map-style.
        num_rows (`dict[str, int]`): Split name -> number of rows (for a streamed split, counted by [`count_rows`]
            without materialising it), to size mixing probabilities.
    """

    config: DataSourceConfig
    splits: dict[str, Dataset | IterableDataset]
    num_rows: dict[str, int] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return list(self.config.label_columns)


@dataclass(frozen=True)
class _LocalFile:
    """One split's local file and how to read it."""

    path: str
    file_format: str
    encoding: str
    conll_columns: tuple[str, ...]
    token_prefix: str | None

    def records(self) -> Iterator[Record]:
        return read_records(self.path, self.file_format, self.encoding, list(self.conll_columns), self.token_prefix)


def _local_files(source: DataSourceConfig) -> dict[str, _LocalFile]:
    if source.dataset_name == DEMO_DATASET:
        folder = resources.files("hf_mtl") / "demo_data"
        return {split: _LocalFile(str(folder / f"{split}.jsonl"), "jsonl", "utf-8", (), None) for split in SPLITS}
    return {
        split: _LocalFile(
            path,
            infer_format(path, source.format),
            source.encoding,
            tuple(source.conll_columns),
            source.token_prefix,
        )
        for split, path in source.files.items()
    }


def _is_hub(source: DataSourceConfig) -> bool:
    return source.dataset_name is not None and source.dataset_name != DEMO_DATASET


def load_source(
    source: DataSourceConfig,
    tasks: list[TaskSpec],
    streaming: bool = False,
    num_proc: int | None = None,
    cache_dir: str | None = None,
) -> LoadedSource:
    """Reads every split of `source` into Arrow and checks each label against its task's label names.

    Local files are read by `datasets`' builders (see [`load_file`]) and mapped onto the tasks by a batched `.map`;
    both steps are cached by fingerprint, so loading the same unchanged files again reads only the cache. When a
    record fails, its file is read again with the line-numbered readers up to that record, so that the error names
    the file and line.

    Args:
        source (`DataSourceConfig`): The corpus.
        tasks (`list[TaskSpec]`): The model's tasks.
        streaming (`bool`, *optional*, defaults to `False`): Give the train split as an `IterableDataset` that reads
            the file (or the Hub) lazily, without materialising it; its bad records fail when they are reached.
            Validation and test splits stay map-style.
        num_proc (`int`, *optional*): Processes for the label mapping.
        cache_dir (`str`, *optional*): The `datasets` cache folder (default: `HF_DATASETS_CACHE`).

    Raises:
        [`HfMtlError`]: naming the file and line (or Hub row) of the first bad record.
    """
    by_name = {task.name: task for task in tasks}
    features = _features(source, by_name)
    files = _local_files(source)
    splits: dict[str, Dataset | IterableDataset] = {}
    num_rows = {}
    for split in SPLITS:
        stream = streaming and split == "train"
        file = files.get(split)
        if file is not None and stream:
            rows = IterableDataset.from_generator(
                _converted_records, features=features, gen_kwargs={"file": file, "source": source, "tasks": by_name}
            )
        elif file is not None:
            raw = _read_file(file, source, by_name, cache_dir)
            rows = _map_records(raw, source, by_name, f"{file.path}[{split}]", file, features, num_proc)
        else:
            raw = _hub_split(source, split, stream, cache_dir) if _is_hub(source) else None
            if raw is None:
                continue
            rows = _map_records(raw, source, by_name, f"{source.dataset_name}[{split}]", None, features, num_proc)
        num_rows[split] = count_rows(source, split) if stream else len(rows)
        if not num_rows[split]:
            if file is not None:
                _raise_first_bad_record(file, source, by_name)
            raise HfMtlError(f"{source.origin}: the {split} split holds no rows")
        splits[split] = rows
    return LoadedSource(config=source, splits=splits, num_rows=num_rows)


def count_rows(source: DataSourceConfig, split: str) -> int:
    """Rows in one split of `source`, without materialising it: one pass over a local file's bytes (see
    [`count_records`]), or the Hub data set's split metadata.

    Raises:
        [`HfMtlError`]: when the source has no such split, or the Hub does not say how many rows it holds.
    """
    file = _local_files(source).get(split)
    if file is not None:
        return count_records(file.path, file.file_format, file.encoding)
    spec = _hub_split_specs(source).get(split) if _is_hub(source) else None
    if spec is None:
        raise HfMtlError(f"{source.origin}: no {split} split")
    import datasets

    info = datasets.load_dataset_builder(
        source.dataset_name, source.dataset_config_name, revision=source.revision
    ).info
    if info.splits is None or spec not in info.splits or info.splits[spec].num_examples is None:
        raise HfMtlError(f"dataset {source.dataset_name!r}: the Hub does not say how many rows split {spec!r} holds")
    return info.splits[spec].num_examples


def _read_file(file: _LocalFile, source: DataSourceConfig, tasks: dict[str, TaskSpec], cache_dir: str | None):
    try:
        return load_file(
            file.path, file.file_format, file.encoding, list(file.conll_columns), file.token_prefix, cache_dir
        )
    except HfMtlError:
        raise
    except Exception as err:  # the builder's parse errors carry no line: find it with the line-numbered readers
        _raise_first_bad_record(file, source, tasks)
        raise HfMtlError(f"{file.path}: cannot read it as {file.file_format} ({_first_line(err)})") from err


def _raise_first_bad_record(file: _LocalFile, source: DataSourceConfig, tasks: dict[str, TaskSpec]) -> None:
    """Reads `file` with the line-numbered readers and converts each record until one fails: its error names the
    file and line. Called only once something is known to be wrong, so the common path never pays for it."""
    for where, record in file.records():
        _convert(where, record, source, tasks)


def _converted_records(
    file: _LocalFile, source: DataSourceConfig, tasks: dict[str, TaskSpec]
) -> Iterator[dict[str, Any]]:
    """Task-labelled rows of a streamed file, read line by line (errors name the file and line as they are met)."""
    for where, record in file.records():
        yield _convert(where, record, source, tasks)


def _map_records(
    raw: Dataset | IterableDataset,
    source: DataSourceConfig,
    tasks: dict[str, TaskSpec],
    origin: str,
    file: _LocalFile | None,
    features: Features,
    num_proc: int | None,
) -> Dataset | IterableDataset:
    """Raw records -> `tokens`/`text` + `{task}_labels`, by a batched (cached) `.map`."""
    if raw.features is None:  # a streamed Hub data set that does not declare its columns
        raw = raw._resolve_features()
    options = {"num_proc": num_proc, "desc": f"Checking labels of {origin}"} if isinstance(raw, Dataset) else {}
    return raw.map(
        _convert_batch,
        batched=True,
        with_indices=True,
        remove_columns=raw.column_names,
        features=features,
        fn_kwargs={
            "source": source,
            "tasks": tasks,
            "origin": origin,
            "file": file,
            "class_names": _class_label_names(raw.features),
        },
        **options,
    )


def _convert_batch(
    batch: dict[str, list],
    indices: list[int],
    source: DataSourceConfig,
    tasks: dict[str, TaskSpec],
    origin: str,
    file: _LocalFile | None,
    class_names: dict[str, list[str]],
) -> dict[str, list]:
    rows: dict[str, list] = {}
    skip_blank = file is not None and file.file_format in ("tsv", "csv")
    for position, index in enumerate(indices):
        record = {column: values[position] for column, values in batch.items()}
        if skip_blank and not any(value.strip() for value in record.values()):
            continue  # a line of empty cells, as the line-numbered reader skips it
        try:
            row = _convert(f"{origin}[{index}]", _decode_class_labels(record, class_names), source, tasks)
        except HfMtlError:
            if file is None:
                raise
            _raise_first_bad_record(file, source, tasks)
            raise
        for key, value in row.items():
            rows.setdefault(key, []).append(value)
    return rows


def _hub_split_specs(source: DataSourceConfig) -> dict[str, str]:
    return source.splits if source.splits is not None else {split: split for split in SPLITS}


def _hub_split(
    source: DataSourceConfig, split: str, streaming: bool, cache_dir: str | None
) -> Dataset | IterableDataset | None:
    """One split of a Hub data set (its `splits` spec, at its `revision`), or `None` when it has no such split."""
    import datasets

    spec = _hub_split_specs(source).get(split)
    if spec is None:
        return None
    if streaming and "[" in spec:
        raise HfMtlError(f"dataset {source.dataset_name!r}: split slices such as {spec!r} cannot be streamed")
    try:
        return datasets.load_dataset(
            source.dataset_name,
            source.dataset_config_name,
            split=spec,
            revision=source.revision,
            streaming=streaming,
            cache_dir=cache_dir,
        )
    except ValueError as err:
        if source.splits is None and "Unknown split" in str(err):
            return None  # the default train/validation/test: a split the data set lacks is simply absent
        raise HfMtlError(f"dataset {source.dataset_name!r}: cannot load split {spec!r} ({_first_line(err)})") from err
    except Exception as err:  # the Hub's errors are many; the user needs one line
        raise HfMtlError(f"dataset {source.dataset_name!r}: cannot load it ({_first_line(err)})") from err


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _class_label_names(features: Features) -> dict[str, list[str]]:
    """Columns whose integers stand for names (`ClassLabel`, or a list of them), with those names."""
    names = {}
    for column, feature in features.items():
        inner = getattr(feature, "feature", None)
        if isinstance(feature, ClassLabel):
            names[column] = feature.names
        elif isinstance(feature, (List, Sequence)) and isinstance(inner, ClassLabel):
            names[column] = inner.names
    return names


def _decode_class_labels(row: dict[str, Any], names: dict[str, list[str]]) -> dict[str, Any]:
    for column, labels in names.items():
        value = row[column]
        if value is not None:
            row[column] = [labels[v] for v in value] if isinstance(value, list) else labels[value]
    return row


def _column(where: str, record: dict[str, Any], column: str) -> Any:
    if column not in record:
        raise HfMtlError(f"{where}: no column {column!r} (columns: {sorted(record)})")
    return record[column]


def _label_id(where: str, raw: Any, task: TaskSpec, label_map: dict[str, str]) -> int:
    label = label_map.get(str(raw), raw) if label_map else raw
    if not isinstance(label, str) or label not in task.label2id:
        mapped = f" (mapped from {raw!r})" if label is not raw else ""
        raise HfMtlError(
            f"{where}: label {label!r}{mapped} is not one of task {task.name!r}'s labels {list(task.labels)}"
        )
    return task.label2id[label]


def _convert(where: str, record: dict[str, Any], source: DataSourceConfig, tasks: dict[str, TaskSpec]) -> dict:
    row: dict[str, Any] = {}
    if source.tokens_column is not None:
        tokens = _column(where, record, source.tokens_column)
        if not isinstance(tokens, list) or not tokens:
            raise HfMtlError(f"{where}: column {source.tokens_column!r} must be a non-empty list of words")
        if not all(isinstance(token, str) and token.strip() for token in tokens):
            raise HfMtlError(f"{where}: column {source.tokens_column!r} holds an empty or non-text word")
        row["tokens"] = tokens
    else:
        text = _column(where, record, source.text_column)
        if not isinstance(text, str) or not text.strip():
            raise HfMtlError(f"{where}: column {source.text_column!r} is empty")
        row["text"] = text
    for task_name, column in source.label_columns.items():
        task = tasks[task_name]
        value = _column(where, record, column)
        label_map = source.label_maps.get(task_name, {})
        if task.is_token_task:
            if not isinstance(value, list) or len(value) != len(row["tokens"]):
                count = len(value) if isinstance(value, list) else "no list of"
                raise HfMtlError(f"{where}: {count} tags in {column!r} for {len(row['tokens'])} words")
            row[task.label_key] = [_label_id(where, tag, task, label_map) for tag in value]
        else:
            row[task.label_key] = _label_id(where, value, task, label_map)
    return row


def _features(source: DataSourceConfig, tasks: dict[str, TaskSpec]) -> Features:
    features = {"tokens": List(Value("string"))} if source.tokens_column else {"text": Value("string")}
    for task_name in source.label_columns:
        task = tasks[task_name]
        features[task.label_key] = List(Value("int64")) if task.is_token_task else Value("int64")
    return Features(features)


def restrict_to_tasks(
    tasks: list[TaskSpec], entries: list[dict[str, Any]], names: list[str]
) -> tuple[list[TaskSpec], list[dict[str, Any]]]:
    """Keeps only the tasks in `names`, and only the data set entries that label one of them (their label columns
    and maps cut down to those tasks): the single-task baseline, on the same code path as the multi-task run."""
    known = [task.name for task in tasks]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise HfMtlError(f"--only_tasks: unknown task(s) {unknown}; tasks: {known}")
    kept_tasks = [task for task in tasks if task.name in names]
    kept_entries = []
    for entry in entries:
        entry = dict(entry)
        if entry.get("dataset_name") == DEMO_DATASET and not entry.get("label_columns"):
            kept_entries.append(entry)  # the demo's default columns follow the tasks
            continue
        entry["label_columns"] = {t: c for t, c in (entry.get("label_columns") or {}).items() if t in names}
        entry["label_maps"] = {t: m for t, m in (entry.get("label_maps") or {}).items() if t in names}
        if entry["label_columns"]:
            kept_entries.append(entry)
    if not kept_entries:
        raise HfMtlError(f"--only_tasks: no data set labels any of {sorted(names)}")
    return kept_tasks, kept_entries


def parse_sources(
    entries: list[dict[str, Any]], tasks: list[TaskSpec], where: str = "datasets"
) -> list[DataSourceConfig]:
    """Validates the `datasets` list of a run config; source names must be unique."""
    if not isinstance(entries, list) or not entries:
        raise HfMtlError(f"{where}: expected a non-empty list of data sets, got {entries!r}")
    sources = [DataSourceConfig.from_dict(entry, tasks, where) for entry in entries]
    names = [source.name for source in sources]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise HfMtlError(f"{where}: data set name(s) {duplicates} appear more than once")
    return sources
