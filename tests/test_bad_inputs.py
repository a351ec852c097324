"""The bad-input corpus: every case in tests/bad_inputs/ fails before training, with one line naming the file
(and line) or the flag, through `HfMtlError`, and leaves the output directory as it was."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertModel

from hf_mtl import HfMtlError, MultiTaskModel
from run_mtl import main

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted(path for path in (ROOT / "tests" / "bad_inputs").iterdir() if path.is_dir())


@pytest.fixture(scope="module")
def saved_ner_model(tiny_dir, tmp_path_factory) -> Path:
    """A saved hf_mtl model whose only task tags PER, not LOC."""
    folder = tmp_path_factory.mktemp("saved-ner")
    tasks = [{"name": "ner", "kind": "token_classification", "labels": ["O", "B-PER", "I-PER"]}]
    MultiTaskModel.from_encoder(str(tiny_dir), tasks).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pickled_model(tiny_dir, tmp_path_factory) -> Path:
    """An encoder folder whose weights are only a pickle (`pytorch_model.bin`)."""
    folder = tmp_path_factory.mktemp("pickled")
    model = BertModel.from_pretrained(tiny_dir)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(folder)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return (
        {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        if folder.exists()
        else {}
    )


def test_the_corpus_covers_at_least_25_cases():
    assert len(CASES) >= 25
    for case in CASES:
        meta = json.loads((case / "case.json").read_text())
        assert meta["expect"] and meta["why"], case.name


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_fails_before_training(case, tmp_path, monkeypatch, tiny_dir, saved_ner_model, pickled_model):
    work = tmp_path / case.name
    shutil.copytree(case, work)
    monkeypatch.chdir(work)
    meta = json.loads((work / "case.json").read_text())
    placeholders = {"@TINY@": str(tiny_dir), "@SAVED@": str(saved_ner_model), "@PICKLED@": str(pickled_model)}
    config = work / "run.yaml"
    if config.is_file():
        text = config.read_text()
        for placeholder, value in placeholders.items():
            text = text.replace(placeholder, value)
        config.write_text(text)
    if meta.get("setup") == "occupied_output_dir":
        (work / "out").mkdir()
        (work / "out" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    before = _snapshot(work / "out")
    head = [] if "config" in meta and meta["config"] is None else ["run.yaml"]
    argv = head + meta["argv"] + ["--output_dir", "out"]

    with pytest.raises(HfMtlError) as info:
        main(argv)
    message = str(info.value)
    assert "\n" not in message
    assert meta["expect"] in message, message
    assert _snapshot(work / "out") == before


def test_cli_prints_one_line_and_debug_shows_the_traceback(tmp_path):
    case = ROOT / "tests" / "bad_inputs" / next(p.name for p in CASES if p.name.endswith("conll_unknown_tag"))
    shutil.copytree(case, tmp_path / "case")
    config = tmp_path / "case" / "run.yaml"
    config.write_text(config.read_text().replace("@TINY@", "sentence-transformers/all-MiniLM-L6-v2"))
    command = [sys.executable, str(ROOT / "run_mtl.py"), "run.yaml", "--output_dir", "out"]
    quiet = subprocess.run(command, cwd=tmp_path / "case", capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines()[-1] == (
        "run_mtl.py: error: ner.conll:4: label 'B-CITY' is not one of task 'ner''s labels "
        "['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC', 'B-ORG', 'I-ORG', 'B-MISC', 'I-MISC']"
    )
    assert "Traceback" not in quiet.stderr
    loud = subprocess.run(command + ["--debug"], cwd=tmp_path / "case", capture_output=True, text=True, timeout=120)
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "HfMtlError" in loud.stderr
    assert not (tmp_path / "case" / "out").exists()
