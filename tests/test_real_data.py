"""The shared real corpora load through the generic file options (no per-data-set code)."""

from collections import Counter

from hf_mtl import parse_tasks
from hf_mtl.data.sources import load_source, parse_sources
from tests.conftest import shared_file

WNUT_TYPES = ["person", "location", "corporation", "product", "creative-work", "group"]
WNUT_TASK = {
    "name": "ner",
    "kind": "token_classification",
    "labels": ["O"] + [f"{p}-{t}" for t in WNUT_TYPES for p in ("B", "I")],
}
SENTIMENT = {"name": "sentiment", "kind": "sequence_classification", "labels": ["negative", "positive"]}


def test_wnut17_splits_load_with_official_counts():
    tasks = parse_tasks([SENTIMENT, WNUT_TASK])
    entry = {
        "name": "wnut17",
        "format": "conll",
        "label_columns": {"ner": "tags"},
        "train_file": str(shared_file("wnut17", "wnut17train.conll")),
        "validation_file": str(shared_file("wnut17", "emerging.dev.conll")),
        "test_file": str(shared_file("wnut17", "emerging.test.annotated")),
    }
    loaded = load_source(parse_sources([entry], tasks)[0], tasks)
    assert {k: len(v) for k, v in loaded.splits.items()} == {"train": 3394, "validation": 1009, "test": 1287}
    b_tags = Counter(tasks[1].labels[i] for row in loaded.splits["train"]["ner_labels"] for i in row)
    assert b_tags["B-person"] == 660 and b_tags["B-group"] == 264  # SOURCE.md's entity counts


def test_sst2_dev_loads_with_label_map():
    tasks = parse_tasks(None)
    entry = {
        "name": "sst2",
        "validation_file": str(shared_file("sst2_glue", "dev.tsv")),
        "text_column": "sentence",
        "label_columns": {"sentiment": "label"},
        "label_maps": {"sentiment": {"0": "negative", "1": "positive"}},
    }
    rows = load_source(parse_sources([entry], tasks)[0], tasks).splits["validation"]
    assert len(rows) == 872 and Counter(rows["sentiment_labels"]) == {1: 444, 0: 428}


def test_wikiann_prefix_is_stripped():
    tasks = parse_tasks(None)
    entry = {
        "name": "wikiann",
        "train_file": str(shared_file("wikiann_en", "test")),
        "format": "conll",
        "token_prefix": "en:",
        "label_columns": {"ner": "tags"},
    }
    rows = load_source(parse_sources([entry], tasks)[0], tasks).splits["train"]
    assert len(rows) == 10000
    assert not any(token.startswith("en:") for row in rows.select(range(500))["tokens"] for token in row)
