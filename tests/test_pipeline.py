"""The joint pipeline, raw-text prediction from the CLI, and Auto classes through `trust_remote_code`."""

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import pipeline

import hf_mtl
from hf_mtl import MultiTaskModelOutput, MultiTaskPipeline
from hf_mtl.pipeline import _group, _units
from hf_mtl.tasks import NER_TAGS
from run_mtl import main

TEXTS = ["José visited São Paulo, then Paris and Paris again.", "The café was awful!", "Anna", "ok " * 5]


def test_entities_are_grouped_by_word_with_offsets_into_the_text(tokenizer):
    # Words are runs of non-space characters (a pre-split corpus joined by spaces), so punctuation stands apart here.
    text = "José visited São Paulo , then Paris and Paris again ."
    word_tags = {"José": "B-PER", "São": "B-LOC", "Paulo": "I-LOC", "Paris": "B-LOC"}
    encoding = tokenizer(text, return_offsets_mapping=True)
    word_ids, offsets = encoding.word_ids(), encoding["offset_mapping"]
    probabilities = torch.full((len(word_ids), len(NER_TAGS)), 0.01)
    previous = None
    for position, word in enumerate(word_ids):
        if word is None:
            continue
        start, end = encoding.word_to_chars(word)
        tag = word_tags.get(text[start:end], "O")
        # Later sub-tokens of a word say B-MISC: the "first" strategy must ignore them.
        probabilities[position, NER_TAGS.index(tag if word != previous else "B-MISC")] = 0.9
        previous = word
    content = [position for position, word in enumerate(word_ids) if word is not None]
    text_offsets = [offsets[position] for position in content]
    entities = _group(_units(text_offsets, probabilities[content], NER_TAGS, "first", text))
    found = [(e["entity_group"], text[e["start"] : e["end"]], e["start"]) for e in entities]
    assert found == [("PER", "José", 0), ("LOC", "São Paulo", 13), ("LOC", "Paris", 30), ("LOC", "Paris", 40)]
    assert all(e["score"] == pytest.approx(0.9) for e in entities)  # the first sub-token's probability


def test_iob2_grouping_rules():
    units = [
        ("B-PER", 0.9, 0, 3),
        ("I-PER", 0.7, 4, 7),
        ("B-PER", 0.8, 8, 9),
        ("I-LOC", 0.6, 10, 12),
        ("O", 0.9, 13, 14),
        ("I-LOC", 0.5, 15, 16),
    ]
    assert [(e["entity_group"], e["start"], e["end"]) for e in _group(units)] == [
        ("PER", 0, 7),
        ("PER", 8, 9),
        ("LOC", 10, 12),
        ("LOC", 15, 16),
    ]
    assert _group(units)[0]["score"] == pytest.approx(0.8)


def test_pipeline_from_the_registry_returns_every_task(saved_model):
    pipe = pipeline("multitask", model=str(saved_model))
    assert isinstance(pipe, MultiTaskPipeline)
    for text, result in zip(TEXTS, pipe(TEXTS)):
        assert set(result) == {"sentiment", "entities"}
        assert result["sentiment"]["label"] in ("negative", "positive") and 0.5 <= result["sentiment"]["score"] <= 1
        for entity in result["entities"]:
            assert entity["entity_group"] in ("PER", "LOC", "ORG", "MISC")
            assert text[entity["start"] : entity["end"]] == entity["word"] and entity["word"].strip()
    simple = pipe(TEXTS[0], aggregation_strategy="simple")
    assert all(TEXTS[0][e["start"] : e["end"]] == e["word"] for e in simple["entities"])


def test_batching_equals_one_by_one(saved_model):
    pipe = pipeline("multitask", model=str(saved_model))
    batched = pipe(TEXTS, batch_size=3)
    for text, result in zip(TEXTS, batched):
        single = pipe(text)
        assert result["sentiment"]["label"] == single["sentiment"]["label"]
        assert result["sentiment"]["score"] == pytest.approx(single["sentiment"]["score"], abs=1e-5)
        assert [(e["entity_group"], e["start"], e["end"]) for e in result["entities"]] == [
            (e["entity_group"], e["start"], e["end"]) for e in single["entities"]
        ]


def test_truncation_true_keeps_only_the_first_window_with_a_warning(saved_model, caplog):
    pipe = pipeline("multitask", model=str(saved_model))
    text = " ".join(["Anna flew to Paris ."] * 40)
    with caplog.at_level(logging.WARNING, logger="hf_mtl.pipeline"):
        result = pipe(text, max_length=24, truncation=True)
    assert any("truncated" in record.message for record in caplog.records)
    assert all(e["end"] <= len(" ".join(["Anna flew to Paris ."] * 6)) for e in result["entities"])
    assert result["sentiment"]["label"] in ("negative", "positive")


class TaggingByWord:
    """A stand-in for a multi-task model with known answers: `elena` is B-PER, `vasquez` I-PER, `lisbon` B-LOC and
    `the` is B-MISC within 2 sub-tokens of a window edge (O elsewhere), everything else O; sentiment is 3:1 positive
    in a window holding `great`, 3:1 negative otherwise. A window's edges are its first and last text sub-tokens."""

    device = torch.device("cpu")

    def __init__(self, config, tokenizer):
        self.config = config
        ids = tokenizer.convert_tokens_to_ids
        self.tags = {ids("elena"): "B-PER", ids("vasquez"): "I-PER", ids("lisbon"): "B-LOC"}
        self.edge_noise, self.great = ids("the"), ids("great")

    def __call__(self, input_ids, attention_mask, **_):
        labels = NER_TAGS
        ner = torch.zeros(*input_ids.shape, len(labels))
        sentiment = torch.zeros(input_ids.shape[0], 2)
        for row, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            positions = mask.nonzero().flatten()[1:-1].tolist()  # the text's sub-tokens, between [CLS] and [SEP]
            for rank, position in enumerate(positions):
                tag = self.tags.get(int(ids[position]), "O")
                if int(ids[position]) == self.edge_noise and min(rank, len(positions) - 1 - rank) <= 2:
                    tag = "B-MISC"
                ner[row, position, labels.index(tag)] = 10.0
            sentiment[row, int(self.great in ids[positions].tolist())] = math.log(3)
        return MultiTaskModelOutput(logits={"sentiment": sentiment, "ner": ner})


def test_long_text_is_read_in_windows_with_tags_from_the_window_centres(tiny_config, tokenizer):
    tiny_config.max_seq_length = 24  # 22 text sub-tokens per window; the default stride is 24 // 4 = 6
    pipe = MultiTaskPipeline(model=TaggingByWord(tiny_config, tokenizer), tokenizer=tokenizer)
    unit = "Élena Vasquez went to Lisbon the the"  # 7 sub-tokens, `É` is read as `e`
    text = ". . . " + " ".join([unit] * 10) + " great . . ."  # 77 sub-tokens, 3.5 times a window
    windows = tokenizer(text, max_length=24, stride=6, truncation=True, return_overflowing_tokens=True)
    assert len(windows["input_ids"]) == 5
    expected = []
    for index in range(10):
        start = len(". . . ") + index * (len(unit) + 1)
        expected.append(("PER", "Élena Vasquez", start, start + len("Élena Vasquez")))
        start += len(unit) - len("the the") - len("Lisbon ")
        expected.append(("LOC", "Lisbon", start, start + len("Lisbon")))
    for batch_size in (1, 4):
        result = pipe([text, "Lisbon"], batch_size=batch_size)[0]
        # Every `the` sits at least 3 sub-tokens from an edge in one of its windows: no B-MISC may come out, and
        # entities cut by a window edge come out whole, with offsets into the text as given.
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in result["entities"]] == expected
        assert all(e["score"] == pytest.approx(math.exp(10) / (math.exp(10) + 8)) for e in result["entities"])
        # Only the last window holds `great`: (0.75 + 4 * 0.25) / 5 positive.
        assert result["sentiment"] == {"label": "negative", "score": pytest.approx(0.65)}
    truncated = pipe(text, truncation=True)  # the first window: `. . .`, two units and `Élena Vasquez went to Lisbon`
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in truncated["entities"]] == expected[:6]
    assert truncated["sentiment"] == {"label": "negative", "score": pytest.approx(0.75)}


def test_stride_must_leave_room_in_a_window(saved_model):
    pipe = pipeline("multitask", model=str(saved_model))
    with pytest.raises(ValueError, match="stride must be at least 0 and less than the 22 sub-tokens"):
        pipe("Anna", max_length=24, stride=22)
    assert set(pipe(" ".join(["Anna flew to Paris ."] * 40), max_length=24, stride=0)) == {"sentiment", "entities"}


def test_predict_cli_on_raw_text(saved_model, tmp_path):
    long_text = " ".join(["Anna flew to Paris ."] * 40)  # about 5 windows of 64 sub-tokens
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join([*TEXTS, long_text]) + "\n\n")
    output_dir = tmp_path / "out"
    main(
        [
            "--model_name_or_path",
            str(saved_model),
            "--do_predict",
            "--predict_file",
            str(texts),
            "--output_dir",
            str(output_dir),
        ]
    )
    lines = [json.loads(line) for line in (output_dir / "text_predictions.jsonl").read_text().splitlines()]
    assert [line["text"] for line in lines] == [*TEXTS, long_text]
    expected = pipeline("multitask", model=str(saved_model))([*TEXTS, long_text])
    assert max(entity["end"] for entity in lines[-1]["entities"]) > len(long_text) - 20  # windows reach the end
    for line, result in zip(lines, expected):
        assert line["sentiment"]["label"] == result["sentiment"]["label"]
        assert [e["word"] for e in line["entities"]] == [e["word"] for e in result["entities"]]
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text('{"text": "Anna"}\n{"txt": "x"}\n')
    with pytest.raises(hf_mtl.HfMtlError, match=r"texts.jsonl:2: expected an object with a non-empty 'text'"):
        main(
            [
                "--model_name_or_path",
                str(saved_model),
                "--do_predict",
                "--predict_file",
                str(jsonl),
                "--output_dir",
                str(tmp_path / "out2"),
            ]
        )


def test_trust_remote_code_loads_the_installed_classes_without_importing_hf_mtl(saved_model):
    config = json.loads((saved_model / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_hf_mtl.MultiTaskConfig",
        "AutoModel": "modeling_hf_mtl.MultiTaskModel",
    }
    assert (saved_model / "modeling_hf_mtl.py").read_text().count("import") == 1
    code = (
        "import sys\n"
        "from transformers import AutoModel\n"
        "assert 'hf_mtl' not in sys.modules\n"
        f"model = AutoModel.from_pretrained({str(saved_model)!r}, trust_remote_code=True)\n"
        "print(type(model).__module__, type(model).__name__, [t.name for t in model.config.task_specs])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=Path(saved_model).parent
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["hf_mtl.modeling_mtl", "MultiTaskModel", "['sentiment',", "'ner']"]
