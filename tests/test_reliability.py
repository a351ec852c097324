"""Crash and resume, and multi-process data-parallel training, with real subprocesses on the tiny model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


@pytest.fixture
def two_corpus_config(tmp_path, tiny_dir) -> Path:
    """A sentiment TSV and a NER CoNLL file, mixed into one training stream."""
    sentiment = tmp_path / "sent.tsv"
    sentiment.write_text(
        "sentence\tlabel\n"
        + "".join(
            f"{adjective} {noun} number {i}\t{label}\n"
            for i, (adjective, noun, label) in enumerate(
                [
                    ("great", "film", "positive"),
                    ("dull", "book", "negative"),
                    ("lovely", "cafe", "positive"),
                    ("awful", "hotel", "negative"),
                ]
                * 40
            )
        )
    )
    ner = tmp_path / "ner.conll"
    ner.write_text(
        "".join(
            f"{name}\tB-PER\nvisited\tO\n{city}\tB-LOC\non\tO\nday\tO\n{i}\tO\n\n"
            for i, (name, city) in enumerate(
                [("Anna", "Paris"), ("Omar", "Rome"), ("Lena", "Oslo"), ("Ravi", "Lima")] * 25
            )
        )
    )
    config = {
        "model_name_or_path": str(tiny_dir),
        "datasets": [
            {
                "name": "sst",
                "train_file": str(sentiment),
                "validation_file": str(sentiment),
                "text_column": "sentence",
                "label_columns": {"sentiment": "label"},
            },
            {
                "name": "conll",
                "format": "conll",
                "train_file": str(ner),
                "validation_file": str(ner),
                "label_columns": {"ner": "tags"},
            },
        ],
        "mixing_strategy": "equal",
        "do_train": True,
        "do_eval": True,
        "report_to": "none",
        "seed": 7,
        "per_device_train_batch_size": 4,
        "learning_rate": 5e-4,
        "logging_steps": 20,
        "disable_tqdm": True,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_mtl.py"), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def test_sigkill_mid_epoch_then_resume_gives_the_same_result(two_corpus_config, tmp_path):
    steps = ["--num_train_epochs", "2", "--save_strategy", "steps", "--save_steps", "30"]
    straight = tmp_path / "straight"
    result = _run([str(two_corpus_config), "--output_dir", str(straight), *steps])
    assert result.returncode == 0, result.stderr[-2000:]

    crashed = tmp_path / "crashed"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run_mtl.py"), str(two_corpus_config), "--output_dir", str(crashed), *steps],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = crashed / "checkpoint-60"
    deadline = time.monotonic() + 300
    while not (checkpoint / "trainer_state.json").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "training finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (crashed / "all_results.json").exists()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    steps_per_epoch = state["max_steps"] / 2
    assert state["global_step"] % steps_per_epoch != 0  # killed mid-epoch

    resumed = _run(
        [str(two_corpus_config), "--output_dir", str(crashed), *steps, "--resume_from_checkpoint", str(checkpoint)]
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = json.loads((straight / "all_results.json").read_text())
    actual = json.loads((crashed / "all_results.json").read_text())
    for key in (
        "eval_sst_loss",
        "eval_conll_loss",
        "eval_sentiment_loss",
        "eval_ner_loss",
        "eval_sentiment_accuracy",
        "eval_ner_f1",
        "eval_combined_score",
    ):
        assert actual[key] == pytest.approx(expected[key], abs=1e-6), key
    weights, resumed_weights = load_file(straight / "model.safetensors"), load_file(crashed / "model.safetensors")
    for name, tensor in weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=0, atol=1e-6)


def test_two_process_data_parallel_training(two_corpus_config, tmp_path):
    single = tmp_path / "single"
    result = _run(
        [
            str(two_corpus_config),
            "--output_dir",
            str(single),
            "--max_steps",
            "30",
            "--per_device_train_batch_size",
            "8",
            "--logging_steps",
            "10",
        ]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    parallel = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "run_mtl.py"),
        str(two_corpus_config),
        "--output_dir",
        str(parallel),
        "--max_steps",
        "30",
        "--per_device_train_batch_size",
        "4",
        "--logging_steps",
        "10",
        "--save_strategy",
        "steps",
        "--save_steps",
        "30",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((parallel / "trainer_state.json").read_text())
    train_logs = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(train_logs) == 3
    for entry in train_logs:
        # Losses are reduced over both ranks: equal mixing labels both tasks in most batches of both ranks.
        assert {"sentiment_loss", "ner_loss"} <= set(entry)
    assert {"eval_sentiment_loss", "eval_ner_loss", "eval_sentiment_accuracy", "eval_ner_f1"} <= set(
        json.loads((parallel / "all_results.json").read_text())
    )
    assert sorted(p.name for p in parallel.glob("checkpoint-*")) == ["checkpoint-30"]
    assert len(list(parallel.glob("README.md"))) == 1 and (parallel / "model.safetensors").is_file()
    expected = json.loads((single / "all_results.json").read_text())
    actual = json.loads((parallel / "all_results.json").read_text())
    for key in ("eval_sentiment_loss", "eval_ner_loss"):
        assert abs(actual[key] - expected[key]) < 0.1 * expected[key], key
    assert actual["eval_samples"] == expected["eval_samples"]
