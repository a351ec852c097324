"""Issue 11's matrix: every BERT-family checkpoint layout loads exactly, trains, and tokenises alike everywhere.

Each case is a tiny random checkpoint built by `tests.families` (family x the Hub's layout for it, plus bare), with a
tokenizer of the family's kind. For each: `from_encoder` loads every encoder tensor of the checkpoint unchanged and
nothing random; 10 steps on the demo set lower the loss; the saved model runs in the `multitask` pipeline; and the
pipeline splits a raw sentence into the same sub-tokens and words that training saw.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, pipeline

from hf_mtl import HfMtlError, MultiTaskModel, MultiTaskTrainer, load_tokenizer, parse_tasks, tokenize_and_align
from hf_mtl.arguments import MultiTaskTrainingArguments
from hf_mtl.data.sources import DEMO_DATASET, load_source, parse_sources
from tests.families import (
    CASES,
    FAMILIES,
    CheckpointCache,
    build_renamed_layer_checkpoint,
    demo_rows,
    encoder_state,
)

TASKS = parse_tasks(None)
SENTIMENT_LABELS, NER_TAGS = (task.labels for task in TASKS)
CASE_IDS = [f"{family}-{layout}" for family, layout in CASES]
# Demo rows (train, then validation) with `'s`, `n't` and hyphenated words among plain ones.
PIPELINE_ROWS = (0, 3, 91, 236, 300)


@dataclass
class Run:
    """A 10-step training run of one case: the loss logged at every step and the folder the model was saved to."""

    losses: list[float]
    folder: Path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and do not stall when other processes hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> CheckpointCache:
    return CheckpointCache(tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="session")
def demo_splits() -> dict[str, Dataset]:
    source = parse_sources([{"name": "demo", "dataset_name": DEMO_DATASET}], TASKS)[0]
    return load_source(source, TASKS).splits


@pytest.fixture(scope="session")
def trained(checkpoints, demo_splits, tmp_path_factory) -> Callable[[str, str], Run]:
    """Trains each case once (10 steps on 16 demo rows, batch 8) and saves model and tokenizer."""
    root = tmp_path_factory.mktemp("trained")

    @cache
    def train(family: str, layout: str) -> Run:
        encoder = checkpoints.get(family, layout)
        tokenizer = load_tokenizer(str(encoder))
        rows = tokenize_and_align(demo_splits["train"].select(range(16)), tokenizer, TASKS)
        torch.manual_seed(0)
        model = MultiTaskModel.from_encoder(str(encoder))
        args = MultiTaskTrainingArguments(
            output_dir=str(root / f"{family}-{layout}-run"),
            max_steps=10,
            per_device_train_batch_size=8,
            # Every step trains both tasks, so that the step losses compare (per-task steps alternate tasks).
            batch_composition="mixed",
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=0,
        )
        trainer = MultiTaskTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
        trainer.train()
        folder = root / f"{family}-{layout}"
        trainer.save_model(str(folder))
        return Run([log["loss"] for log in trainer.state.log_history if "loss" in log], folder)

    return train


def _word_of_each_piece(offsets: list[tuple[int, int]], special: list[int], words: list[str]) -> list[int | None]:
    """For raw text `" ".join(words)`: the word each sub-token belongs to by its character span (`None` for special
    tokens); a span that starts on the space before a word (Metaspace's `▁`, byte-level `Ġ`) belongs to that word."""
    ends = []
    for word in words:
        ends.append((ends[-1] + 1 if ends else 0) + len(word))
    return [
        None if is_special else bisect.bisect_right(ends, start) for (start, _), is_special in zip(offsets, special)
    ]


@pytest.mark.parametrize(("family", "layout"), CASES, ids=CASE_IDS)
def test_from_encoder_loads_every_encoder_tensor_exactly(checkpoints, caplog, family, layout):
    folder = checkpoints.get(family, layout)
    saved = encoder_state(family, layout, folder)
    has_pooler = FAMILIES[family].has_pooler[layout]
    assert any(key.startswith("pooler.") for key in saved) is has_pooler

    with caplog.at_level(logging.WARNING, logger="hf_mtl"):
        model = MultiTaskModel.from_encoder(str(folder))

    loaded = model.encoder.state_dict()
    # Nothing but the checkpoint's tensors: a pooler the checkpoint lacks is not built (it would be random).
    assert sorted(loaded) == sorted(saved)
    assert [key for key in saved if not torch.equal(loaded[key], saved[key])] == []
    assert model.config.encoder_pooler is has_pooler
    assert model.config.sentence_pooling == ("pooler" if has_pooler else "cls")
    fallbacks = [
        record for record in caplog.records if record.name.startswith("hf_mtl") and "pooler" in record.message
    ]
    assert len(fallbacks) == (0 if has_pooler else 1)


def test_a_renamed_layer_is_refused_in_one_line(tmp_path):
    folder = build_renamed_layer_checkpoint(tmp_path / "renamed")
    with pytest.raises(HfMtlError) as raised:
        MultiTaskModel.from_encoder(str(folder))
    message = str(raised.value)
    assert "\n" not in message
    assert str(folder) in message and "encoder.layer.1." in message


@pytest.mark.parametrize(("family", "layout"), CASES, ids=CASE_IDS)
def test_ten_steps_lower_the_loss(trained, family, layout):
    losses = trained(family, layout).losses
    assert len(losses) == 10
    assert sum(losses[-3:]) < sum(losses[:3])


@pytest.mark.parametrize(("family", "layout"), CASES, ids=CASE_IDS)
def test_saved_model_runs_in_the_pipeline(trained, family, layout):
    pipe = pipeline("multitask", model=str(trained(family, layout).folder))
    texts = [" ".join(demo_rows()[index]["tokens"]) for index in PIPELINE_ROWS]
    for text, result in zip(texts, pipe(texts)):
        assert result["sentiment"]["label"] in SENTIMENT_LABELS
        assert all(entity["word"] == text[entity["start"] : entity["end"]] for entity in result["entities"])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_pipeline_entities_are_the_training_words(trained, family):
    # A NER head that says B-PER everywhere: with the `first` strategy, each word the model was trained on (a
    # whitespace-separated token of the data, such as `n't` or `open-air`) must come out as one entity, exactly.
    pipe = pipeline("multitask", model=str(trained(family, "bare").folder))
    classifier = pipe.model.heads["ner"].classifier
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.copy_(torch.nn.functional.one_hot(torch.tensor(NER_TAGS.index("B-PER")), len(NER_TAGS)))
    for index in PIPELINE_ROWS:
        words = demo_rows()[index]["tokens"]
        assert [entity["word"] for entity in pipe(" ".join(words))["entities"]] == words


@pytest.mark.parametrize(("family", "layout"), CASES, ids=CASE_IDS)
def test_training_and_pipeline_split_sentences_alike(checkpoints, demo_splits, trained, family, layout):
    rows = demo_splits["train"]
    sentences = list(rows["tokens"])
    tokenizer = load_tokenizer(str(checkpoints.get(family, layout)))
    training = tokenize_and_align(rows, tokenizer, TASKS)
    split = tokenizer(sentences, is_split_into_words=True)
    raw = AutoTokenizer.from_pretrained(trained(family, layout).folder)(
        [" ".join(words) for words in sentences], return_offsets_mapping=True, return_special_tokens_mask=True
    )
    assert raw["input_ids"] == list(training["input_ids"])
    for index, words in enumerate(sentences):
        pieces = _word_of_each_piece(raw["offset_mapping"][index], raw["special_tokens_mask"][index], words)
        assert pieces == split.word_ids(index)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tokenizers_know_every_demo_character(checkpoints, family):
    tokenizer = AutoTokenizer.from_pretrained(checkpoints.get(family, "bare"))
    ids = tokenizer([" ".join(row["tokens"]) for row in demo_rows()])["input_ids"]
    assert [sentence for sentence in ids if tokenizer.unk_token_id in sentence] == []
    assert set(FAMILIES[family].special_tokens) <= set(tokenizer.all_special_tokens)


def test_byte_level_bpe_sees_other_pieces_in_training_without_add_prefix_space(checkpoints):
    folder = str(checkpoints.get("roberta", "bare"))
    words = demo_rows()[0]["tokens"]
    text = " ".join(words)

    def markers(tokenizer, encoding) -> list[bool]:
        """Whether each word's first piece carries the byte-level space marker `Ġ`."""
        pieces = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
        firsts = [encoding.word_to_tokens(word).start for word in range(len(words))]
        return [pieces[position].startswith("Ġ") for position in firsts]

    plain = AutoTokenizer.from_pretrained(folder)
    plain_split, plain_raw = plain(words, is_split_into_words=True), plain(text)
    assert plain_split["input_ids"] != plain_raw["input_ids"]
    assert markers(plain, plain_split) == [False] * len(words)
    assert markers(plain, plain_raw) == [False] + [True] * (len(words) - 1)

    fixed = load_tokenizer(folder)
    fixed_split, fixed_raw = fixed(words, is_split_into_words=True), fixed(text)
    assert fixed_split["input_ids"] == fixed_raw["input_ids"]
    assert markers(fixed, fixed_split) == [True] * len(words)
