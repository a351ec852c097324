"""Turning predicted label ids back into label names, per word, for `--do_predict`'s JSONL output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from .data.sources import LoadedSource
from .tasks import TaskSpec


def word_tags(word_ids: list[int | None], token_predictions: np.ndarray, task: TaskSpec, num_words: int) -> list:
    """Each word's tag is the prediction at its first sub-token; words cut off by truncation get `None`."""
    tags: list[str | None] = [None] * num_words
    previous = None
    for position, word_id in enumerate(word_ids):
        if word_id is not None and word_id != previous:
            tags[word_id] = task.labels[int(token_predictions[position])]
        previous = word_id
    return tags


def prediction_records(
    loaded: list[LoadedSource],
    predictions: dict[str, dict[str, np.ndarray]],
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[TaskSpec],
    max_seq_length: int | None,
    split: str = "test",
) -> list[dict[str, Any]]:
    """One record per row of `split`; `predictions` maps each source's name to its `{task: ids}` arrays."""
    records = []
    for source in loaded:
        if split not in source.splits:
            continue
        source_predictions = predictions[source.config.name]
        for index, row in enumerate(source.splits[split]):
            is_split = row.get("tokens") is not None
            encoding = tokenizer(
                row["tokens"] if is_split else row["text"],
                is_split_into_words=is_split,
                truncation=True,
                max_length=max_seq_length,
            )
            word_ids = encoding.word_ids()
            if is_split:
                words = row["tokens"]
            else:
                spans = [encoding.word_to_chars(w) for w in sorted({w for w in word_ids if w is not None})]
                words = [row["text"][span.start : span.end] for span in spans]
            record: dict[str, Any] = {"dataset": source.config.name}
            record["tokens" if is_split else "text"] = words if is_split else row["text"]
            for task in tasks:
                task_predictions = source_predictions[task.name][index]
                if task.is_token_task:
                    if not is_split:
                        record["words"] = words
                    record[task.name] = word_tags(word_ids, task_predictions, task, len(words))
                else:
                    record[task.name] = task.labels[int(task_predictions)]
            records.append(record)
    return records


def write_predictions(path: Path, loaded, predictions, tokenizer, tasks, max_seq_length, split: str = "test") -> None:
    records = prediction_records(loaded, predictions, tokenizer, tasks, max_seq_length, split)
    with Path(path).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
