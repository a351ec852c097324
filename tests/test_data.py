import json

import pytest
import torch

from hf_mtl import HfMtlError, MultiTaskDataCollator, parse_tasks, tokenize_and_align
from hf_mtl.data.mixing import mix_datasets, mixing_probabilities
from hf_mtl.data.preprocessing import align_word_labels
from hf_mtl.data.sources import DEMO_DATASET, load_source, parse_sources

TASKS = parse_tasks(None)


def _source(**entry):
    return parse_sources([{"name": "src", **entry}], TASKS)[0]


def test_conll_file_with_prefix_and_label_map(tmp_path):
    path = tmp_path / "train"
    path.write_text("en:Anna\tB-person\nen:sings\tO\n\nen:Paris\tB-location\n")
    source = _source(
        train_file=str(path),
        format="conll",
        token_prefix="en:",
        label_columns={"ner": "tags"},
        label_maps={"ner": {"B-person": "B-PER", "B-location": "B-LOC"}},
    )
    rows = load_source(source, TASKS).splits["train"]
    assert rows["tokens"] == [["Anna", "sings"], ["Paris"]]
    assert rows["ner_labels"] == [[1, 0], [3]]
    assert "sentiment_labels" not in rows.column_names


def test_tsv_with_label_map_latin1(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes("sentence\tlabel\ncaf\xe9 was great \t1\nawful \t0\n".encode("latin-1"))
    entry = {
        "validation_file": str(path),
        "text_column": "sentence",
        "label_columns": {"sentiment": "label"},
        "label_maps": {"sentiment": {"0": "negative", "1": "positive"}},
    }
    with pytest.raises(HfMtlError, match=r"dev.tsv:2: not valid utf-8 .*set `encoding`"):
        load_source(_source(**entry), TASKS)
    rows = load_source(_source(**entry, encoding="latin-1"), TASKS).splits["validation"]
    assert rows["text"] == ["caf\xe9 was great ", "awful "] and rows["sentiment_labels"] == [1, 0]


def test_json_array_and_jsonl(tmp_path):
    records = [{"words": ["Rome", "rocks"], "tags": ["B-LOC", "O"], "mood": "positive"}]
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for name in ("a.json", "a.jsonl"):
        source = _source(
            train_file=str(tmp_path / name), tokens_column="words", label_columns={"ner": "tags", "sentiment": "mood"}
        )
        rows = load_source(source, TASKS).splits["train"]
        assert rows[0] == {"tokens": ["Rome", "rocks"], "sentiment_labels": 1, "ner_labels": [3, 0]}


@pytest.mark.parametrize(
    ("name", "content", "entry", "message"),
    [
        ("a.conll", "Anna\tB-PER\nParis\n", {"label_columns": {"ner": "tags"}}, r"a.conll:2: expected 2 fields"),
        # A token lost from the line (the Broad Twitter Corpus's dev and test files have 7 such lines).
        ("a.conll", "Anna\tB-PER\n\tO\n", {"label_columns": {"ner": "tags"}}, r"a.conll:2: the tokens field is empty"),
        (
            "a.conll",
            "Anna\tB-XYZ\n",
            {"label_columns": {"ner": "tags"}},
            r"a.conll:1: label 'B-XYZ' is not one of task 'ner'",
        ),
        (
            "a.tsv",
            "sentence\tlabel\ngood\t7\n",
            {"text_column": "sentence", "label_columns": {"sentiment": "label"}},
            r"a.tsv:2: label '7' is not one of task 'sentiment'",
        ),
        (
            "a.tsv",
            "sentence\tlabel\n\t1\n",
            {"text_column": "sentence", "label_columns": {"sentiment": "label"}},
            r"a.tsv:2: column 'sentence' is empty",
        ),
        (
            "a.tsv",
            "text\tlabel\ngood\t1\n",
            {"text_column": "sentence", "label_columns": {"sentiment": "label"}},
            r"a.tsv:2: no column 'sentence'",
        ),
        (
            "a.jsonl",
            '{"tokens": ["a"], "tags": ["O"]}\n{oops\n',
            {"tokens_column": "tokens", "label_columns": {"ner": "tags"}},
            r"a.jsonl:2: not valid JSON",
        ),
        (
            "a.jsonl",
            '{"tokens": ["a", "b"], "tags": ["O"]}\n',
            {"tokens_column": "tokens", "label_columns": {"ner": "tags"}},
            r"a.jsonl:1: 1 tags in 'tags' for 2 words",
        ),
        (
            "a.jsonl",
            "\n\n",
            {"tokens_column": "tokens", "label_columns": {"ner": "tags"}},
            r"a.jsonl: the file is empty",
        ),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, name, content, entry, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(HfMtlError, match=message):
        load_source(_source(train_file=str(tmp_path / name), **entry), TASKS)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"train_file": "x.tsv", "text_column": "t", "label_columns": {"topic": "l"}}, "unknown task 'topic'"),
        ({"train_file": "x.tsv", "text_column": "t", "label_columns": {"ner": "l"}}, "need word lists"),
        ({"train_file": "x.txt", "text_column": "t", "label_columns": {"sentiment": "l"}}, "cannot tell the format"),
        ({"text_column": "t", "label_columns": {"sentiment": "l"}}, "give dataset_name or train_file"),
        (
            {"train_file": "x.tsv", "text_column": "t", "label_columns": {"sentiment": "l"}, "colour": 1},
            "unknown data set key",
        ),
    ],
)
def test_bad_source_configs(entry, message):
    with pytest.raises(HfMtlError, match=message):
        _source(**entry)


def test_missing_file():
    with pytest.raises(HfMtlError, match="nope.tsv: no such file"):
        load_source(_source(train_file="nope.tsv", text_column="t", label_columns={"sentiment": "l"}), TASKS)


def test_demo_set_has_three_splits_labelled_for_both_tasks():
    loaded = load_source(_source(dataset_name=DEMO_DATASET), TASKS)
    assert {k: len(v) for k, v in loaded.splits.items()} == {"train": 300, "validation": 60, "test": 60}
    train = loaded.splits["train"]
    assert set(train["sentiment_labels"]) == {0, 1}
    assert {tag for row in train["ner_labels"] for tag in row} == set(range(9))


def test_alignment_first_subtoken_carries_the_tag(tokenizer):
    rows = load_source(_source(dataset_name=DEMO_DATASET), TASKS).splits["train"].select(range(20))
    encoded = tokenize_and_align(rows, tokenizer, TASKS)
    for raw, row in zip(rows, encoded):
        word_ids = tokenizer(raw["tokens"], is_split_into_words=True, truncation=True).word_ids()
        firsts = [i for i, w in enumerate(word_ids) if w is not None and (i == 0 or word_ids[i - 1] != w)]
        assert [row["ner_labels"][i] for i in firsts] == raw["ner_labels"]
        assert all(row["ner_labels"][i] == -100 for i in range(len(word_ids)) if i not in firsts)
        assert row["sentiment_labels"] == raw["sentiment_labels"]
    # The tiny vocab splits unknown names into characters: some words must have several sub-tokens.
    assert sum(len(r["input_ids"]) for r in encoded) > sum(len(r["tokens"]) + 2 for r in rows)


def test_alignment_under_truncation(tokenizer):
    words = ["Zyx", "loved", "Qwerty", "Lisbon", "."]
    labels = [1, 0, 5, 3, 0]
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=6)
    aligned = align_word_labels(encoding.word_ids(), labels)
    assert len(aligned) == 6 and aligned[0] == -100 and aligned[-1] == -100  # [CLS] ... [SEP]
    kept = [w for w in encoding.word_ids() if w is not None]
    for position, word in enumerate(encoding.word_ids()):
        if word is not None and (position == 0 or encoding.word_ids()[position - 1] != word):
            assert aligned[position] == labels[word]
    assert max(kept) < len(words) - 1  # words after the cut are simply absent


def test_rows_missing_a_task_get_minus_100_throughout(tmp_path, tokenizer):
    path = tmp_path / "s.tsv"
    path.write_text("sentence\tlabel\ngreat film\tpositive\n")
    rows = load_source(
        _source(train_file=str(path), text_column="sentence", label_columns={"sentiment": "label"}), TASKS
    ).splits["train"]
    encoded = tokenize_and_align(rows, tokenizer, TASKS)[0]
    assert encoded["sentiment_labels"] == 1
    assert encoded["ner_labels"] == [-100] * len(encoded["input_ids"])


def test_collator_pads_dynamically(tokenizer):
    collator = MultiTaskDataCollator(tokenizer, token_label_names=["ner_labels"])
    features = [
        {
            "input_ids": [2, 10, 3],
            "token_type_ids": [0, 0, 0],
            "attention_mask": [1, 1, 1],
            "sentiment_labels": 1,
            "ner_labels": [-100, 4, -100],
        },
        {
            "input_ids": [2, 10, 11, 12, 3],
            "token_type_ids": [0] * 5,
            "attention_mask": [1] * 5,
            "sentiment_labels": -100,
            "ner_labels": [-100, 0, 1, 2, -100],
        },
    ]
    batch = collator(features)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert batch["ner_labels"].tolist() == [[-100, 4, -100, -100, -100], [-100, 0, 1, 2, -100]]
    assert batch["sentiment_labels"].tolist() == [1, -100] and batch["sentiment_labels"].dtype == torch.long


def test_mixing_probabilities():
    assert mixing_probabilities([300, 100], "proportional") == [0.75, 0.25]
    assert mixing_probabilities([300, 100], "equal") == [0.5, 0.5]
    temperature = mixing_probabilities([400, 100], "temperature", temperature=2.0)
    assert temperature == pytest.approx([20 / 30, 10 / 30])
    with pytest.raises(HfMtlError, match="mixing_temperature"):
        mixing_probabilities([1, 2], "temperature", temperature=0)


def test_interleaving_two_corpora_keeps_every_row_of_each(tmp_path, tokenizer):
    (tmp_path / "s.tsv").write_text("sentence\tlabel\n" + "".join(f"film {i}\tpositive\n" for i in range(30)))
    (tmp_path / "n.conll").write_text("".join(f"Paris\tB-LOC\nnumber\tO\n{i}\tO\n\n" for i in range(10)))
    sentiment = _source(
        train_file=str(tmp_path / "s.tsv"), text_column="sentence", label_columns={"sentiment": "label"}
    )
    ner = parse_sources(
        [{"name": "ner", "train_file": str(tmp_path / "n.conll"), "label_columns": {"ner": "tags"}}], TASKS
    )[0]
    parts = {
        s.name: tokenize_and_align(load_source(s, TASKS).splits["train"], tokenizer, TASKS) for s in (sentiment, ner)
    }
    mixed = mix_datasets(parts, "equal", seed=0)
    from_sentiment = [r for r in mixed if r["sentiment_labels"] != -100]
    from_ner = [r for r in mixed if r["sentiment_labels"] == -100]
    assert all(set(r["ner_labels"]) == {-100} for r in from_sentiment)
    assert all(r["ner_labels"][1] == 3 for r in from_ner)
    assert len({tuple(r["input_ids"]) for r in from_sentiment}) == 30  # all_exhausted: every row seen
    assert len(from_ner) >= 30  # equal sampling repeats the small corpus
