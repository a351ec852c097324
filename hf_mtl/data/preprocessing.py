"""Tokenisation and label alignment: word-level tags onto sub-tokens, missing tasks filled with -100."""

from __future__ import annotations

from datasets import Dataset, Features, IterableDataset, List, Value
from transformers import PreTrainedTokenizerBase

from ..errors import HfMtlError
from ..heads import IGNORE_INDEX
from ..tasks import TaskSpec

# Sub-tokens per row, precomputed for `train_sampling_strategy="group_by_length"` (the Trainer's `length_column_name`
# default), so the length-grouped sampler reads one column instead of every row.
LENGTH_COLUMN = "length"


def align_word_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Labels per sub-token: the first sub-token of each word carries the word's label; later sub-tokens of the
    same word, special tokens and padding get -100.

    Truncation drops whole sub-tokens from the end, so `word_ids` simply stops early and each surviving word keeps
    its own label: alignment holds under truncation.
    """
    labels = []
    previous = None
    for word_id in word_ids:
        labels.append(IGNORE_INDEX if word_id is None or word_id == previous else word_labels[word_id])
        previous = word_id
    return labels


def model_features(tokenizer: PreTrainedTokenizerBase, tasks: list[TaskSpec]) -> Features:
    """The one schema every tokenised source shares, so that sources can be interleaved and concatenated."""
    features = {name: List(Value("int64")) for name in tokenizer.model_input_names}
    features[LENGTH_COLUMN] = Value("int32")
    for task in tasks:
        features[task.label_key] = List(Value("int64")) if task.is_token_task else Value("int64")
    return Features(features)


def tokenize_and_align(
    dataset: Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[TaskSpec],
    max_seq_length: int | None = None,
    num_proc: int | None = None,
    desc: str | None = None,
) -> Dataset:
    """Tokenises a loaded source split and gives every task a label column.

    Args:
        dataset (`Dataset` or `IterableDataset`): Rows with `tokens` (word lists) or `text`, plus `{task}_labels` for
            labelled tasks. An `IterableDataset` is tokenised lazily, batch by batch, as it is iterated.
        tokenizer (`PreTrainedTokenizerBase`): A fast tokenizer (word alignment needs `word_ids()`).
        tasks (`list[TaskSpec]`): All of the model's tasks; those the rows do not label get -100 throughout.
        max_seq_length (`int`, *optional*): Truncate to this many sub-tokens (default: the tokenizer's maximum).
        num_proc (`int`, *optional*): Processes for a map-style `dataset` (ignored when streaming).
        desc (`str`, *optional*): Progress bar label for a map-style `dataset`.

    Returns:
        `Dataset` (or `IterableDataset`, as given): `input_ids`, `attention_mask` (and `token_type_ids` where the
        tokenizer makes them), one `{task}_labels` column per task and `length` (sub-tokens per row, for
        length-grouped batching). Padding is left to the collator (dynamic, per batch). A map-style result is
        cached by `datasets` beside the input's cache files, keyed by the input's fingerprint, the tokenizer and
        these arguments: tokenising the same rows with the same tokenizer again reads the cache instead of calling
        the tokenizer.
    """
    if not tokenizer.is_fast:
        raise HfMtlError(f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; word alignment needs one")
    is_split = "tokens" in dataset.column_names

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoding = tokenizer(
            batch["tokens"] if is_split else batch["text"],
            is_split_into_words=is_split,
            truncation=True,
            max_length=max_seq_length,
        )
        size = len(encoding["input_ids"])
        encoding[LENGTH_COLUMN] = [len(ids) for ids in encoding["input_ids"]]
        for task in tasks:
            given = batch.get(task.label_key)
            if task.is_token_task:
                if given is None:
                    encoding[task.label_key] = [[IGNORE_INDEX] * len(ids) for ids in encoding["input_ids"]]
                else:
                    encoding[task.label_key] = [align_word_labels(encoding.word_ids(i), given[i]) for i in range(size)]
            else:
                encoding[task.label_key] = given if given is not None else [IGNORE_INDEX] * size
        return dict(encoding)

    options = {"num_proc": num_proc, "desc": desc} if isinstance(dataset, Dataset) else {}
    return dataset.map(
        encode, batched=True, remove_columns=dataset.column_names, features=model_features(tokenizer, tasks), **options
    )
