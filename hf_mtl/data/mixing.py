"""Mixing corpora labelled for different tasks into one training stream, with `datasets.interleave_datasets`."""

from __future__ import annotations

import math

from datasets import Dataset, IterableDataset, interleave_datasets
from transformers.utils import ExplicitEnum

from ..errors import HfMtlError


class MixingStrategy(ExplicitEnum):
    """How often each corpus is sampled: in proportion to its size, to size^(1/T), or equally."""

    PROPORTIONAL = "proportional"
    TEMPERATURE = "temperature"
    EQUAL = "equal"


def mixing_probabilities(sizes: list[int], strategy: str, temperature: float = 2.0) -> list[float]:
    """Sampling probability of each corpus.

    `proportional` is `n_i / sum(n)`; `temperature` is `n_i^(1/T)` normalised (T = 1 is proportional, a large T
    tends to equal); `equal` is `1/k`. Temperature sampling (as in multilingual BERT and T5) lifts a small corpus
    without repeating it as often as equal sampling does.
    """
    strategy = MixingStrategy(strategy)
    if strategy == MixingStrategy.TEMPERATURE and not (math.isfinite(temperature) and temperature > 0):
        raise HfMtlError(f"--mixing_temperature must be a positive number, got {temperature}")
    if strategy == MixingStrategy.EQUAL:
        weights = [1.0] * len(sizes)
    elif strategy == MixingStrategy.TEMPERATURE:
        weights = [size ** (1.0 / temperature) for size in sizes]
    else:
        weights = [float(size) for size in sizes]
    total = sum(weights)
    return [weight / total for weight in weights]


def mix_datasets(
    datasets: dict[str, Dataset | IterableDataset],
    strategy: str = MixingStrategy.PROPORTIONAL,
    temperature: float = 2.0,
    seed: int = 42,
    stopping_strategy: str = "all_exhausted",
    sizes: dict[str, int] | None = None,
) -> Dataset | IterableDataset:
    """One training set drawn from several tokenised corpora (which share one schema), by probability.

    With `all_exhausted` (the default) sampling goes on until every corpus has been seen once, so a small corpus
    that is sampled more often than its share is repeated; with `first_exhausted` it stops at the first corpus to
    run out, so no row repeats but part of the larger corpora is unused in that pass. `IterableDataset`s (streamed
    corpora) are interleaved the same way, lazily; their `sizes` (rows per corpus, by name) must then be given for
    `proportional` and `temperature` sampling.
    """
    if len(datasets) == 1:
        return next(iter(datasets.values()))
    sizes = sizes or {}
    counts = [sizes[name] if name in sizes else len(dataset) for name, dataset in datasets.items()]
    probabilities = mixing_probabilities(counts, strategy, temperature)
    return interleave_datasets(
        list(datasets.values()), probabilities=probabilities, seed=seed, stopping_strategy=stopping_strategy
    )
