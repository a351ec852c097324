"""Samplers: for training, length-grouped batches in a random order (little padding, no drift from long to short
rows) and per-task batches (every step trains one task); for evaluation, the rows from the longest to the shortest."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset
from torch.utils.data import Sampler

from ..errors import HfMtlError
from ..heads import IGNORE_INDEX
from .mixing import mixing_probabilities


class ShuffledLengthGroupedSampler(Sampler[int]):
    """Like [`~transformers.trainer_pt_utils.LengthGroupedSampler`], with the batches of each megabatch shuffled.

    The rows are permuted, cut into megabatches of `megabatch_batches` batches, and each megabatch is sorted by
    length and cut into batches, so a batch holds rows of similar length and padding nearly vanishes. The Trainer's
    sampler then yields each megabatch from its longest batch to its shortest; here the batches of a megabatch come
    in a random order instead, so training does not sweep from long rows to short ones over and over (on SST-2 +
    WNUT-17, where length tells the corpora apart, that sweep cost sentiment accuracy; docs/BENCHMARKS.md).

    Args:
        lengths (`list[int]`): Length of each row (the `length` column).
        batch_size (`int`): Rows per batch (times gradient accumulation steps and processes, as the Trainer does).
        megabatch_batches (`int`, *optional*, defaults to 50): Batches per megabatch (the Trainer's value).
        generator (`torch.Generator`, *optional*): Randomness; a new epoch draws a new order from it.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        megabatch_batches: int = 50,
        generator: torch.Generator | None = None,
    ):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        # As in the Trainer: at most a quarter of the data per megabatch, so small sets are still shuffled.
        self.megabatch_batches = max(1, min(megabatch_batches, len(self.lengths) // (batch_size * 4)))
        self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self, equal_words: bool = False) -> list[list[int]]:
        """One epoch's batches, in order. With `equal_words`, each megabatch is cut into as many batches as by rows
        (its rows / `batch_size`, rounded up), but of about equal summed length instead of equal rows
        ([`equal_length_batches`]): a batch of short rows holds more of them."""
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        size = self.megabatch_batches * self.batch_size
        batches: list[list[int]] = []
        for start in range(0, len(order), size):
            megabatch = sorted(order[start : start + size], key=lambda index: self.lengths[index], reverse=True)
            if equal_words:
                cut = equal_length_batches([self.lengths[i] for i in megabatch], -(-len(megabatch) // self.batch_size))
                cut = [[megabatch[i] for i in batch] for batch in cut]
            else:
                cut = [megabatch[i : i + self.batch_size] for i in range(0, len(megabatch), self.batch_size)]
            batches += [cut[position] for position in torch.randperm(len(cut), generator=self.generator).tolist()]
        return batches

    def __iter__(self) -> Iterator[int]:
        return iter([index for batch in self.batches() for index in batch])


class LengthSortedSampler(Sampler[int]):
    """Evaluation order: the rows from the longest to the shortest (rows of equal length in the data's order), so
    that every evaluation batch holds rows of about one length and pads little.

    Outputs gathered in this order come back to the data's order with `inverse`: `outputs[sampler.inverse][i]` is
    the output of row i.

    Args:
        lengths (`list[int]`): Each row's length in tokens.
    """

    def __init__(self, lengths: list[int] | np.ndarray):
        self.order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
        self.inverse = np.argsort(self.order, kind="stable")

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())

    @classmethod
    def from_dataset(cls, dataset: Dataset, input_name: str = "input_ids") -> LengthSortedSampler | None:
        """The sampler of a tokenised dataset, from the lengths of its `input_name` lists; `None` without that
        column."""
        if input_name not in dataset.column_names:
            return None
        lengths = pc.list_value_length(dataset.with_format("arrow")[input_name])
        return cls(lengths.to_numpy(zero_copy_only=False))


def equal_length_batches(lengths: list[int], num_batches: int) -> list[list[int]]:
    """Cut rows, in their order, into `num_batches` consecutive non-empty batches whose summed `lengths` are as equal
    as the order allows: batch j ends where the running sum is nearest to j / num_batches of the total. On rows sorted
    by length this gives a batch of short rows more rows, so every batch holds about as many tokens (the way
    translation toolkits batch by tokens), and padding stays as small as with equal-row batches.

    Returns the positions of each batch's rows (no batch for no rows)."""
    if not lengths:
        return []
    num_batches = max(1, min(num_batches, len(lengths)))
    running = list(itertools.accumulate(lengths))
    total = running[-1]
    ends = []
    for j in range(1, num_batches):
        target = total * j / num_batches
        end = bisect.bisect_left(running, target)  # running[end] >= target: end + 1 rows reach it
        if end > 0 and target - running[end - 1] < running[end] - target:
            end -= 1
        previous = ends[-1] if ends else 0
        # At least one row in this batch and in each batch after it.
        ends.append(min(max(end + 1, previous + 1), len(lengths) - (num_batches - j)))
    bounds = [0, *ends, len(lengths)]
    return [list(range(bounds[i], bounds[i + 1])) for i in range(num_batches)]


class TaskHomogeneousSampler(Sampler[int]):
    """Batches that each hold the rows of one task group (rows labelling the same tasks: one corpus, or the
    corpora labelled for the same task), in a random order of batches, as MT-DNN and AllenNLP's multitask
    scheduler draw them, or with each group's batches evenly spaced (`interleaved`).

    The training set is already mixed (its rows repeat a corpus as often as the mixing strategy samples it), so
    each group's share of the batches is its share of the mixed rows: the mixing probabilities. Inside a group the
    batches are length-grouped ([`ShuffledLengthGroupedSampler`]) when `lengths` is given, else random. A group's
    last, partial batch is filled up with other rows of the same group, so that every `batch_size` consecutive
    indices (one batch of the DataLoader) come from one group.

    With `num_epochs`, the shares are annealed instead (Stickland & Murray, 2019): in epoch e (0-based) of E, group
    g gets a share of the epoch's batches proportional to size_g^alpha, alpha = 1 - 0.8 e / (E - 1): proportional in
    the first epoch, nearly equal in the last. The number of batches per epoch stays that of the proportional
    epoch; a group draws its rows for the epoch from a fresh permutation of its rows, repeated if it needs more.

    Args:
        groups (`list[int]`): The task group of each row.
        batch_size (`int`): Rows per batch (the per-device batch size: one micro-batch under accumulation).
        lengths (`list[int]`, *optional*): Each row's length, for length-grouped batches inside a group.
        generator (`torch.Generator`, *optional*): Randomness; a new epoch draws a new order from it.
        num_epochs (`int`, *optional*): Anneal the groups' shares over this many epochs (see above); the Trainer
            tells the sampler the epoch through `set_epoch`.
        megabatch_batches (`int`, *optional*, defaults to 50): With `lengths`, the batches per megabatch of the
            length grouping inside a group ([`ShuffledLengthGroupedSampler`]).
        random_groups (`set[int]`, *optional*): Groups whose batches are random rows even with `lengths`.
        equal_word_groups (`set[int]`, *optional*): With `lengths`, groups whose length-grouped batches hold about
            equal tokens (summed `lengths`) instead of equal rows (as many batches, a batch of short rows holding
            more rows). Their batches vary in size, so iterate them through [`TaskHomogeneousBatchSampler`] (a
            DataLoader's `batch_sampler`), not as a flat sampler.
        interleaved (`bool`, *optional*, defaults to `False`): Space each group's batches evenly over the epoch
            instead of permuting all batches at random: the k-th of a group's n batches goes to position (k + u) / n
            of the epoch, u uniform in [0, 1) per group and epoch. Two groups with as many batches alternate.
    """

    def __init__(
        self,
        groups: list[int],
        batch_size: int,
        lengths: list[int] | None = None,
        generator: torch.Generator | None = None,
        num_epochs: int | None = None,
        megabatch_batches: int = 50,
        random_groups: set[int] | None = None,
        equal_word_groups: set[int] | None = None,
        interleaved: bool = False,
    ):
        self.groups = list(groups)
        self.megabatch_batches = megabatch_batches
        self.random_groups = set(random_groups or ())
        self.equal_word_groups = set(equal_word_groups or ())
        self.batch_size = batch_size
        self.interleaved = interleaved
        self.lengths = list(lengths) if lengths is not None else None
        self.generator = generator
        self.num_epochs = num_epochs
        self.epoch = 0
        self.members: dict[int, list[int]] = {}
        for index, group in enumerate(self.groups):
            self.members.setdefault(group, []).append(index)
        self.num_batches = sum(-(-len(rows) // self.batch_size) for rows in self.members.values())

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def annealing_alpha(self) -> float:
        """alpha of the current epoch: 1 - 0.8 e / (E - 1) (1 for a single epoch)."""
        if not self.num_epochs or self.num_epochs <= 1:
            return 1.0
        return 1.0 - 0.8 * min(self.epoch, self.num_epochs - 1) / (self.num_epochs - 1)

    def batches_per_group(self) -> dict[int, int]:
        """The current epoch's batches per group: `num_batches` split in proportion to size^alpha (largest
        remainders), at least one per group."""
        sizes = {group: len(rows) for group, rows in self.members.items()}
        shares = mixing_probabilities(list(sizes.values()), "temperature", 1.0 / self.annealing_alpha())
        exact = [share * self.num_batches for share in shares]
        counts = [max(1, int(value)) for value in exact]
        by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
        for i in by_remainder[: self.num_batches - sum(counts)]:
            counts[i] += 1
        while sum(counts) > self.num_batches:  # only when a group was lifted to one batch
            counts[counts.index(max(counts))] -= 1
        return dict(zip(sizes, counts))

    def _epoch_rows(self, rows: list[int], batches: int) -> list[int]:
        needed = batches * self.batch_size
        drawn: list[int] = []
        while len(drawn) < needed:
            drawn += [rows[i] for i in torch.randperm(len(rows), generator=self.generator).tolist()]
        return drawn[:needed]

    def _group_batches(self, rows: list[int]) -> list[list[int]]:
        if self.lengths is not None and self.groups[rows[0]] not in self.random_groups:
            inner = ShuffledLengthGroupedSampler(
                [self.lengths[i] for i in rows], self.batch_size, self.megabatch_batches
            )
            inner.generator = self.generator
            if self.groups[rows[0]] in self.equal_word_groups:
                return [[rows[i] for i in batch] for batch in inner.batches(equal_words=True)]
            order = [rows[i] for i in inner]
        else:
            order = [rows[i] for i in torch.randperm(len(rows), generator=self.generator).tolist()]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        missing = self.batch_size - len(batches[-1])
        if missing:
            fill = torch.randperm(len(order), generator=self.generator).tolist()
            batches[-1] += [order[i] for i in fill if order[i] not in batches[-1]][:missing]
            while len(batches[-1]) < self.batch_size:  # a group smaller than one batch repeats its rows
                batches[-1].append(order[len(batches[-1]) % len(order)])
        return batches

    def epoch_batches(self) -> list[list[int]]:
        """One epoch's batches, in order (each a list of row indices)."""
        if self.num_epochs is None:
            per_group = [self._group_batches(rows) for rows in self.members.values()]
        else:
            counts = self.batches_per_group()
            per_group = [
                self._group_batches(self._epoch_rows(rows, counts[group])) for group, rows in self.members.items()
            ]
        if self.interleaved:
            placed = []
            for batches in per_group:
                offset = torch.rand(1, generator=self.generator).item()
                placed += [((k + offset) / len(batches), batch) for k, batch in enumerate(batches)]
            return [batch for _, batch in sorted(placed, key=lambda item: item[0])]
        batches = [batch for group_batches in per_group for batch in group_batches]
        return [batches[position] for position in torch.randperm(len(batches), generator=self.generator).tolist()]

    def __iter__(self) -> Iterator[int]:
        for batch in self.epoch_batches():
            yield from batch


class TaskHomogeneousBatchSampler(Sampler[list[int]]):
    """A [`TaskHomogeneousSampler`]'s batches as lists, for a DataLoader's `batch_sampler`: the form batches of
    varying size need (`equal_word_groups`). Same batches, same order, same epochs."""

    def __init__(self, sampler: TaskHomogeneousSampler):
        self.sampler = sampler

    def __len__(self) -> int:
        return self.sampler.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.sampler.epoch_batches()

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def is_labelled(value: int | list[int]) -> bool:
    """Whether a row's label value (a sentence task's int, a token task's list) labels anything (not all -100)."""
    return any(label != IGNORE_INDEX for label in value) if isinstance(value, list) else value != IGNORE_INDEX


def labelled_positions(value: int | list[int]) -> int:
    """How many positions a row's label value labels: 0 or 1 for a sentence task's int, the words not -100 for a
    token task's list."""
    return sum(label != IGNORE_INDEX for label in value) if isinstance(value, list) else int(value != IGNORE_INDEX)


def column_values(dataset, name: str) -> list:
    """Column `name` of `dataset` as a list of Python values, read in one Arrow query (whatever the dataset's
    format). Iterating a `datasets` column (`dataset[name]`) reads it row by row: seconds per 10,000 rows."""
    if not isinstance(dataset, Dataset):
        return list(dataset[name])
    if dataset.format["type"] == "custom":  # a transform may need every column: row by row, as it formats them
        return list(dataset[name])
    return dataset.with_format(None)[name][:]


def split_by_task(dataset: Dataset, label_keys: list[str]) -> Dataset:
    """One row per (row, labelled task): a row that labels several tasks (a jointly labelled corpus) becomes one copy
    per task, each with the other tasks' labels set to -100; rows labelling one task are kept as they are. With
    per-task batches, every optimizer step then trains one task, as in that task's single-task run."""

    def masked(value):
        return [IGNORE_INDEX] * len(value) if isinstance(value, list) else IGNORE_INDEX

    columns = [column_values(dataset, key) for key in label_keys]
    if not any(sum(map(is_labelled, row)) > 1 for row in zip(*columns)):
        return dataset

    def split(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {column: [] for column in batch}
        for index in range(len(batch[label_keys[0]])):
            tasks = [key for key in label_keys if is_labelled(batch[key][index])] or label_keys[:1]
            for task in tasks:
                for column, values in batch.items():
                    keep = column not in label_keys or column == task or len(tasks) == 1
                    out[column].append(values[index] if keep else masked(values[index]))
        return out

    return dataset.map(split, batched=True, desc="One copy per task of jointly labelled rows")


def task_groups(label_columns: dict[str, list]) -> list[int]:
    """Each row's task group: rows that label the same set of tasks share a group. `label_columns` maps each task's
    label key to its column (an int per row for sentence tasks, a list per row for token tasks; -100 = no label)."""
    signatures: dict[tuple[bool, ...], int] = {}
    columns = list(label_columns.values())
    groups = []
    for row in zip(*columns):
        signature = tuple(is_labelled(value) for value in row)
        groups.append(signatures.setdefault(signature, len(signatures)))
    return groups


def labelled_positions_per_row(dataset: Dataset, label_keys: list[str]) -> dict[str, float]:
    """Each task's mean labelled positions per row, over the rows that label it (1 for a sentence task, the mean
    number of labelled words for a token task); 1 for a task no row labels. Keyed by label column."""
    totals = dict.fromkeys(label_keys, 0)
    rows = dict.fromkeys(label_keys, 0)
    for batch in dataset.select_columns(label_keys).iter(batch_size=1000):
        for key in label_keys:
            for value in batch[key]:
                count = labelled_positions(value)
                totals[key] += count
                rows[key] += count > 0
    return {key: totals[key] / rows[key] if rows[key] else 1.0 for key in label_keys}


def training_epochs(args, num_batches: int) -> int:
    """The epochs training will run (begun ones count): `num_train_epochs` rounded up, or as many as `max_steps`
    optimizer steps take with `num_batches` batches (of all processes) per epoch."""
    if args.max_steps > 0:
        steps_per_epoch = max(1, num_batches // (args.gradient_accumulation_steps * args.world_size))
        return -(-args.max_steps // steps_per_epoch)
    return math.ceil(args.num_train_epochs)


def training_sampler(dataset, args, label_keys: list[str]) -> Sampler[int] | Sampler[list[int]] | None:
    """hf_mtl's training sampler for `args` (a [`MultiTaskTrainingArguments`]): per-task batches under
    `batch_composition="per_task"` (under `train_sampling_strategy="group_by_length"`, length-grouped inside a
    sentence task, and inside a token task with `length_group_token_tasks`; random rows otherwise),
    else length-grouped batches in a random order under `group_by_length`, else `None` (the Trainer's own).

    Args:
        dataset: The training set, with each task's label column (`label_keys`) and, for length grouping, a `length`
            (or `input_ids`) column.
        args: The training arguments.
        label_keys (`list[str]`): The tasks' label columns (`sentiment_labels`, `ner_labels`).
    """
    per_task = getattr(args, "batch_composition", "mixed") == "per_task"
    if per_task and not hasattr(dataset, "__len__"):
        raise HfMtlError("--batch_composition per_task needs a map-style training set (not a stream)")
    annealed = getattr(args, "annealed_sampling", False)
    group_size = getattr(args, "length_group_size", 50)
    if args.train_sampling_strategy != "group_by_length" and not per_task:
        return None
    columns = getattr(dataset, "column_names", None) or []
    lengths = None
    if args.train_sampling_strategy == "group_by_length":
        if args.length_column_name in columns:
            lengths = column_values(dataset, args.length_column_name)
        elif "input_ids" in columns:
            lengths = [len(ids) for ids in column_values(dataset, "input_ids")]
    if per_task:
        columns = {key: column_values(dataset, key) for key in label_keys}
        groups = task_groups(columns)
        # Token tasks' label columns hold a list per row; a group labelling one of them does so in all its rows, so
        # its first row tells.
        token_keys = [key for key, column in columns.items() if column and isinstance(column[0], list)]
        first_rows = {group: index for index, group in reversed(list(enumerate(groups)))}
        token_groups = {
            group for group, index in first_rows.items() if any(is_labelled(columns[key][index]) for key in token_keys)
        }
        by_words = getattr(args, "token_batches_by_words", False)
        random_groups = set() if getattr(args, "length_group_token_tasks", False) else set(token_groups)
        if not getattr(args, "length_group_sentence_tasks", True):
            random_groups |= set(first_rows) - token_groups
        sampler = TaskHomogeneousSampler(
            groups,
            args.train_batch_size,
            lengths,
            megabatch_batches=group_size,
            random_groups=random_groups,
            equal_word_groups=token_groups if by_words else set(),
            interleaved=getattr(args, "task_batch_order", "random") == "interleaved",
        )
        if annealed:
            sampler.num_epochs = training_epochs(args, sampler.num_batches)
        return TaskHomogeneousBatchSampler(sampler) if by_words else sampler
    if lengths is None:
        return None
    return ShuffledLengthGroupedSampler(
        lengths, args.train_batch_size * args.gradient_accumulation_steps, megabatch_batches=group_size
    )


__all__ = [
    "ShuffledLengthGroupedSampler",
    "TaskHomogeneousBatchSampler",
    "TaskHomogeneousSampler",
    "column_values",
    "equal_length_batches",
    "split_by_task",
    "task_groups",
    "training_sampler",
]
