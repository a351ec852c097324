"""From data source entries to what a `MultiTaskTrainer` takes: the mixed training set and one evaluation (and test)
set per corpus, tokenised to one schema."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase

from ..errors import HfMtlError
from ..tasks import TaskSpec, parse_tasks
from .mixing import MixingStrategy, mix_datasets
from .preprocessing import tokenize_and_align
from .sources import DataSourceConfig, LoadedSource, load_source, parse_sources

logger = logging.getLogger(__name__)


@dataclass
class MultiTaskDatasets:
    """Tokenised data of a multi-task run.

    Args:
        train (`Dataset` or `IterableDataset`, *optional*): The corpora's training rows mixed into one stream (an
            `IterableDataset` with `streaming=True`).
        validation (`dict[str, Dataset]`): Each corpus's validation set, by corpus name.
        test (`dict[str, Dataset]`): Each corpus's test set, by corpus name.
        sources (`list[LoadedSource]`): The loaded corpora (untokenised rows), for predictions and the model card.
    """

    train: Dataset | IterableDataset | None = None
    validation: dict[str, Dataset] = field(default_factory=dict)
    test: dict[str, Dataset] = field(default_factory=dict)
    sources: list[LoadedSource] = field(default_factory=list)

    @property
    def eval_dataset(self) -> Dataset | dict[str, Dataset] | None:
        """What `Trainer(eval_dataset=...)` takes: the one validation set, or a dict of them (metrics then come per
        corpus and merged per task)."""
        if not self.validation:
            return None
        return next(iter(self.validation.values())) if len(self.validation) == 1 else dict(self.validation)

    @property
    def source_configs(self) -> list[DataSourceConfig]:
        return [source.config for source in self.sources]

    def example_text(self) -> str | None:
        """A sentence of the data (the first validation, test or training row), e.g. for the model card's widget."""
        for split in ("validation", "test", "train"):
            for source in self.sources:
                rows = source.splits.get(split)
                if rows is None or isinstance(rows, IterableDataset):
                    continue
                row = rows[0]
                return " ".join(row["tokens"]) if row.get("tokens") is not None else row["text"]
        return None


def load_multitask_datasets(
    sources: list[dict[str, Any] | DataSourceConfig],
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[TaskSpec] | list[dict] | None = None,
    max_seq_length: int | None = 128,
    mixing_strategy: str = MixingStrategy.PROPORTIONAL,
    mixing_temperature: float = 2.0,
    stopping_strategy: str = "all_exhausted",
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    max_predict_samples: int | None = None,
    num_proc: int | None = None,
    streaming: bool = False,
    where: str = "datasets",
) -> MultiTaskDatasets:
    """Loads every corpus, tokenises each split to one schema and mixes the training splits.

    Each corpus labels its own tasks; every other task's labels are -100, so rows of different corpora can share a
    batch. Evaluation and test sets stay one per corpus, so that each task is scored on the corpora that label it.

    Args:
        sources (`list`): Data source entries (as in a run config's `datasets`) or [`DataSourceConfig`]s.
        tokenizer (`PreTrainedTokenizerBase`): A fast tokenizer (see [`load_tokenizer`]).
        tasks (`list`, *optional*): The model's tasks (default: sentiment + ner); labels are checked against them.
        max_seq_length (`int`, *optional*, defaults to 128): Truncate rows to this many sub-tokens.
        mixing_strategy (`str`, *optional*, defaults to `"proportional"`): `proportional`, `temperature` or `equal`.
        mixing_temperature (`float`, *optional*, defaults to 2.0): T of temperature sampling.
        stopping_strategy (`str`, *optional*, defaults to `"all_exhausted"`): When the mixed stream ends.
        seed (`int`, *optional*, defaults to 42): Seed of the mixing draw.
        max_train_samples, max_eval_samples, max_predict_samples (`int`, *optional*): Keep the first N rows of each
            corpus's split.
        num_proc (`int`, *optional*): Processes for reading and tokenising.
        streaming (`bool`, *optional*, defaults to `False`): Read the training splits as `IterableDataset`s, mixed
            by `interleave_datasets` without materialising them (train with `max_steps`); evaluation and test sets
            stay map-style. Under torchrun [`MultiTaskTrainer`] has each process read the stream and keep its own
            shard of it (accelerate's `dispatch_batches=False`).
        where (`str`, *optional*): Names the entries in error messages (a flag or file).

    Example:

    ```python
    >>> data = hf_mtl.load_multitask_datasets([{"name": "demo", "dataset_name": "hf_mtl:demo"}], tokenizer)
    >>> trainer = hf_mtl.MultiTaskTrainer(model, args, train_dataset=data.train, eval_dataset=data.eval_dataset,
    ...                                   processing_class=tokenizer)  # doctest: +SKIP
    ```"""
    if tasks is not None:
        tasks = [task.to_dict() if isinstance(task, TaskSpec) else task for task in tasks]
    specs = parse_tasks(tasks, where="tasks")
    entries = [source for source in sources if not isinstance(source, DataSourceConfig)]
    configs = parse_sources(entries, specs, where) if entries else []
    configs += [source for source in sources if isinstance(source, DataSourceConfig)]
    loaded = [load_source(config, specs, streaming=streaming, num_proc=num_proc) for config in configs]

    def tokenized(split: str, limit: int | None) -> dict[str, Dataset | IterableDataset]:
        out = {}
        for source in loaded:
            if split not in source.splits:
                continue
            rows = source.splits[split]
            if limit is not None:
                rows = (
                    rows.take(limit)
                    if isinstance(rows, IterableDataset)
                    else rows.select(range(min(limit, len(rows))))
                )
                source.splits[split] = rows
            out[source.config.name] = tokenize_and_align(
                rows, tokenizer, specs, max_seq_length, num_proc, desc=f"Tokenising {source.config.name}/{split}"
            )
        return out

    train = tokenized("train", max_train_samples)
    mixed = None
    if train:
        limit = max_train_samples or float("inf")
        sizes = {s.config.name: min(s.num_rows["train"], limit) for s in loaded if "train" in s.splits}
        mixed = mix_datasets(train, mixing_strategy, mixing_temperature, seed, stopping_strategy, sizes=sizes)
        logger.info("Training on corpora %s mixed by %s sampling", sizes, MixingStrategy(mixing_strategy).value)
    return MultiTaskDatasets(
        train=mixed,
        validation=tokenized("validation", max_eval_samples),
        test=tokenized("test", max_predict_samples),
        sources=loaded,
    )


def check_splits(data: MultiTaskDatasets, do_train: bool, do_eval: bool, do_predict: bool) -> None:
    """Raises if a requested phase has no data: `--do_train` without a train split, and so on."""
    for flag, wanted, present, split in (
        ("--do_train", do_train, data.train is not None, "train"),
        ("--do_eval", do_eval, bool(data.validation), "validation"),
        ("--do_predict", do_predict, bool(data.test), "test"),
    ):
        if wanted and not present:
            raise HfMtlError(f"{flag}: no data set has a {split} split")


__all__ = ["MultiTaskDatasets", "check_splits", "load_multitask_datasets"]
