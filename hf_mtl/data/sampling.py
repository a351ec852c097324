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


__all__ = ["ShuffledLengthGroupedSampler"]
