"""The joint pipeline, raw-text prediction from the CLI, and Auto classes through `trust_remote_code`."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, pipeline

import hf_mtl
from hf_mtl import MultiTaskModel, MultiTaskPipeline
from hf_mtl.pipeline import _group, _units
from hf_mtl.tasks import NER_TAGS
from run_mtl import main

TEXTS = ["José visited São Paulo, then Paris and Paris again.", "The café was awful!", "Anna", "ok " * 5]


@pytest.fixture(scope="module")
def saved_model(tiny_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved")
    torch.manual_seed(1)
    MultiTaskModel.from_encoder(str(tiny_dir)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(folder)
    return folder


def test_entities_are_grouped_by_word_with_offsets_into_the_text(tokenizer):
    text = "José visited São Paulo, then Paris and Paris again."
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
    entities = _group(_units(word_ids, offsets, probabilities, NER_TAGS, "first"))
    found = [(e["entity_group"], text[e["start"] : e["end"]], e["start"]) for e in entities]
    assert found == [("PER", "José", 0), ("LOC", "São Paulo", 13), ("LOC", "Paris", 29), ("LOC", "Paris", 39)]
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


def test_long_input_is_truncated_with_a_warning(saved_model, caplog):
    pipe = pipeline("multitask", model=str(saved_model))
    text = " ".join(["Anna flew to Paris ."] * 40)
    with caplog.at_level(logging.WARNING, logger="hf_mtl.pipeline"):
        result = pipe(text, max_length=24)
    assert any("truncated" in record.message for record in caplog.records)
    assert all(e["end"] <= len(" ".join(["Anna flew to Paris ."] * 6)) for e in result["entities"])
    assert result["sentiment"]["label"] in ("negative", "positive")


def test_predict_cli_on_raw_text(saved_model, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n\n")
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
    assert [line["text"] for line in lines] == TEXTS
    expected = pipeline("multitask", model=str(saved_model))(TEXTS)
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
