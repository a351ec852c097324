"""Shared fixtures: a tiny random BERT (hidden 32, 2 layers) and a local word-piece vocab; no network."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml
from transformers import BertConfig, BertModel, BertTokenizer

from hf_mtl import MultiTaskConfig, MultiTaskModel

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def datasets_cache(tmp_path_factory) -> Path:
    """The `datasets` cache of this test session (and of the scripts it starts) in a temporary folder, so that tests
    neither read nor fill the user's cache."""
    import datasets

    folder = tmp_path_factory.mktemp("hf-datasets-cache")
    previous = os.environ.get("HF_DATASETS_CACHE"), datasets.config.HF_DATASETS_CACHE
    os.environ["HF_DATASETS_CACHE"] = str(folder)
    datasets.config.HF_DATASETS_CACHE = folder
    yield folder
    datasets.config.HF_DATASETS_CACHE = previous[1]
    if previous[0] is None:
        os.environ.pop("HF_DATASETS_CACHE", None)
    else:
        os.environ["HF_DATASETS_CACHE"] = previous[0]


TOPIC_TASK = {"name": "topic", "kind": "sequence_classification", "labels": ["food", "travel", "other"], "weight": 0.5}


def _vocab() -> list[str]:
    """Specials, single characters (so any word splits into pieces), and the demo set's frequent words."""
    words = Counter()
    for split in ("train", "validation", "test"):
        text = (resources.files("hf_mtl") / "demo_data" / f"{split}.jsonl").read_text()
        for line in text.splitlines():
            words.update(token.lower() for token in json.loads(line)["tokens"])
    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    frequent = [w for w, _ in words.most_common(400) if w not in characters and len(w) > 1]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *pieces, *frequent]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A saved tiny BERT encoder + tokenizer, usable as `model_name_or_path`."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = _vocab()
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, model_max_length=64)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    return BertTokenizer.from_pretrained(tiny_dir)


@pytest.fixture
def tiny_config(tiny_dir) -> MultiTaskConfig:
    return MultiTaskConfig(encoder=BertConfig.from_pretrained(tiny_dir))


@pytest.fixture
def tiny_model(tiny_dir) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel.from_encoder(str(tiny_dir))


@pytest.fixture(scope="module")
def saved_model(tiny_dir, tmp_path_factory) -> Path:
    """A saved hf_mtl model (default tasks, random heads on the tiny encoder) with its tokenizer."""
    folder = tmp_path_factory.mktemp("saved")
    torch.manual_seed(1)
    MultiTaskModel.from_encoder(str(tiny_dir)).save_pretrained(folder)
    BertTokenizer.from_pretrained(tiny_dir).save_pretrained(folder)
    return folder


def write_two_corpora(folder: Path, sentiment_rows: int = 20, ner_sentences: int = 20) -> list[dict]:
    """Writes a sentiment TSV and a CoNLL NER file into `folder` and returns their `datasets` entries: each corpus
    labels one task; both have a validation split, the NER corpus a test split too."""
    texts = [("a great film", 1), ("dull and slow", 0), ("loved it", 1), ("a waste of time", 0)]
    sentiment = folder / "sent.tsv"
    rows = [texts[i % len(texts)] for i in range(sentiment_rows)]
    sentiment.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows))
    people = [("Anna", "Paris"), ("Omar", "Rome"), ("Lena", "Oslo"), ("Ravi", "Lima")]
    ner = folder / "ner.conll"
    ner.write_text(
        "".join(
            f"{name}\tB-PER\nvisited\tO\n{city}\tB-LOC\n\n" for name, city in (people * ner_sentences)[:ner_sentences]
        )
    )
    return [
        {
            "name": "sst",
            "train_file": str(sentiment),
            "validation_file": str(sentiment),
            "text_column": "sentence",
            "label_columns": {"sentiment": "label"},
            "label_maps": {"sentiment": {"0": "negative", "1": "positive"}},
        },
        {
            "name": "conll",
            "format": "conll",
            "train_file": str(ner),
            "validation_file": str(ner),
            "test_file": str(ner),
            "label_columns": {"ner": "tags"},
        },
    ]


@pytest.fixture
def two_corpora(tmp_path, tiny_dir) -> Path:
    """A run config over two corpora, each labelled for one task (`write_two_corpora`), with per-corpus validation
    sets evaluated every 2 steps."""
    config = {
        "model_name_or_path": str(tiny_dir),
        "datasets": write_two_corpora(tmp_path),
        "do_train": True,
        "do_eval": True,
        "do_predict": True,
        "report_to": "none",
        "eval_strategy": "steps",
        "eval_steps": 2,
        "metric_for_best_model": "combined_score",
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real data not available: {path} is missing (it lives in ../shared/data beside the repo)")
    return path


def run_quick_benchmark(script: str, output: Path) -> subprocess.CompletedProcess:
    """Runs `python benchmarks/<script> --quick --output <output>` from the repository root (the CI smoke version);
    skips when the real corpora are absent, and fails with the script's stderr if it fails."""
    if not (SHARED_DATA / "wnut17" / "wnut17train.conll").is_file():
        pytest.skip(f"real data not available: {SHARED_DATA} is missing")
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--quick", "--output", str(output)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result
