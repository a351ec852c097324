"""Length-grouped batches in a random order: little padding, and no drift from long to short rows."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


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

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        size = self.megabatch_batches * self.batch_size
        indices: list[int] = []
        for start in range(0, len(order), size):
            megabatch = sorted(order[start : start + size], key=lambda index: self.lengths[index], reverse=True)
            batches = [megabatch[i : i + self.batch_size] for i in range(0, len(megabatch), self.batch_size)]
            for position in torch.randperm(len(batches), generator=self.generator).tolist():
                indices.extend(batches[position])
        return iter(indices)


class TaskHomogeneousSampler(Sampler[int]):
    """Batches that each hold the rows of one task group (rows labelling the same tasks: one corpus, or the
    corpora labelled for the same task), in a random order of batches, as MT-DNN and AllenNLP's multitask
    scheduler draw them.

    The training set is already mixed (its rows repeat a corpus as often as the mixing strategy samples it), so
    each group's share of the batches is its share of the mixed rows: the mixing probabilities. Inside a group the
    batches are length-grouped ([`ShuffledLengthGroupedSampler`]) when `lengths` is given, else random. A group's
    last, partial batch is filled up with other rows of the same group, so that every `batch_size` consecutive
    indices (one batch of the DataLoader) come from one group.

    Args:
        groups (`list[int]`): The task group of each row.
        batch_size (`int`): Rows per batch (the per-device batch size: one micro-batch under accumulation).
        lengths (`list[int]`, *optional*): Each row's length, for length-grouped batches inside a group.
        generator (`torch.Generator`, *optional*): Randomness; a new epoch draws a new order from it.
    """

    def __init__(
        self,
        groups: list[int],
        batch_size: int,
        lengths: list[int] | None = None,
        generator: torch.Generator | None = None,
    ):
        self.groups = list(groups)
        self.batch_size = batch_size
        self.lengths = list(lengths) if lengths is not None else None
        self.generator = generator
        self.members: dict[int, list[int]] = {}
        for index, group in enumerate(self.groups):
            self.members.setdefault(group, []).append(index)

    def __len__(self) -> int:
        return sum(-(-len(rows) // self.batch_size) * self.batch_size for rows in self.members.values())

    def _group_batches(self, rows: list[int]) -> list[list[int]]:
        if self.lengths is not None:
            inner = ShuffledLengthGroupedSampler([self.lengths[i] for i in rows], self.batch_size)
            inner.generator = self.generator
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

    def __iter__(self) -> Iterator[int]:
        batches = [batch for rows in self.members.values() for batch in self._group_batches(rows)]
        for position in torch.randperm(len(batches), generator=self.generator).tolist():
            yield from batches[position]


def task_groups(label_columns: dict[str, list]) -> list[int]:
    """Each row's task group: rows that label the same set of tasks share a group. `label_columns` maps each task's
    label key to its column (an int per row for sentence tasks, a list per row for token tasks; -100 = no label)."""
    signatures: dict[tuple[bool, ...], int] = {}
    columns = list(label_columns.values())
    groups = []
    for row in zip(*columns):
        signature = tuple(
            any(label != -100 for label in value) if isinstance(value, list) else value != -100 for value in row
        )
        groups.append(signatures.setdefault(signature, len(signatures)))
    return groups


__all__ = ["ShuffledLengthGroupedSampler", "TaskHomogeneousSampler", "task_groups"]
