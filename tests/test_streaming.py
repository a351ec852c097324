"""`--streaming`: corpora read as `IterableDataset`s, mixed lazily in the configured proportions, trained with
`--max_steps`, on one process and under torchrun."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import IterableDataset

import hf_mtl
from run_mtl import main
from tests.conftest import write_two_corpora

ROOT = Path(__file__).resolve().parents[1]
SENTIMENT_ROWS, NER_SENTENCES = 3000, 1000


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> list[dict]:
    """A sentiment TSV of 3,000 rows and a CoNLL file of 1,000 sentences: sizes 3:1."""
    return write_two_corpora(tmp_path_factory.mktemp("stream"), SENTIMENT_ROWS, NER_SENTENCES)


@pytest.mark.parametrize(
    ("strategy", "share"), [("proportional", 0.75), ("temperature", math.sqrt(3) / (math.sqrt(3) + 1))]
)
def test_streamed_corpora_are_drawn_in_the_configured_proportions(corpora, tokenizer, strategy, share):
    data = hf_mtl.load_multitask_datasets(
        corpora, tokenizer, max_seq_length=32, mixing_strategy=strategy, mixing_temperature=2.0, seed=0, streaming=True
    )
    assert isinstance(data.train, IterableDataset) and not isinstance(data.validation["sst"], IterableDataset)
    draws = 2000
    rows = list(data.train.take(draws))
    sentiment = sum(row["sentiment_labels"] != -100 for row in rows)
    ner = sum(any(label != -100 for label in row["ner_labels"]) for row in rows)
    assert sentiment + ner == draws  # every row labels exactly one task
    # A binomial count: within 4 standard deviations of draws * share (fails by chance about once in 16,000 seeds).
    sd = math.sqrt(draws * share * (1 - share))
    assert abs(sentiment - draws * share) < 4 * sd, (sentiment, draws * share)


def test_streaming_trains_for_max_steps_and_needs_them(corpora, tiny_dir, tmp_path):
    common = ["--model_name_or_path", str(tiny_dir), "--datasets", json.dumps(corpora), "--streaming", "true"]
    common += ["--report_to", "none", "--disable_tqdm", "true", "--do_train", "--per_device_train_batch_size", "8"]
    with pytest.raises(hf_mtl.HfMtlError, match="--streaming: a stream has no length; set --max_steps"):
        main([*common, "--output_dir", str(tmp_path / "no-steps")])
    metrics = main([*common, "--output_dir", str(tmp_path / "streamed"), "--max_steps", "5", "--logging_steps", "1"])
    assert metrics["train_samples"] == 5 * 8
    state = json.loads((tmp_path / "streamed" / "trainer_state.json").read_text())
    assert state["global_step"] == 5
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == 5 and all("sentiment_loss" in entry or "ner_loss" in entry for entry in logged)


@pytest.mark.integration
def test_streaming_under_torchrun_with_two_processes(corpora, tiny_dir, tmp_path):
    output_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "run_mtl.py")]
    command += ["--model_name_or_path", str(tiny_dir), "--datasets", json.dumps(corpora), "--streaming", "true"]
    command += ["--do_train", "--max_steps", "3", "--per_device_train_batch_size", "4", "--report_to", "none"]
    command += ["--output_dir", str(output_dir), "--disable_tqdm", "true", "--logging_steps", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (output_dir / "model.safetensors").is_file()
