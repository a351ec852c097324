"""Data: reading local files, loading sources into task-labelled rows, tokenisation, mixing and collation."""

from .collator import MultiTaskDataCollator
from .mixing import MixingStrategy, mix_datasets, mixing_probabilities
from .multitask_datasets import MultiTaskDatasets, load_multitask_datasets
from .preprocessing import tokenize_and_align
from .sources import DataSourceConfig, LoadedSource, count_rows, load_source

__all__ = [
    "DataSourceConfig",
    "LoadedSource",
    "MixingStrategy",
    "MultiTaskDataCollator",
    "MultiTaskDatasets",
    "count_rows",
    "load_multitask_datasets",
    "load_source",
    "mix_datasets",
    "mixing_probabilities",
    "tokenize_and_align",
]
