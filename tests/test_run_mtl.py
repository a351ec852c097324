import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from transformers import AutoModel, AutoTokenizer

import hf_mtl  # noqa: F401
from run_mtl import cli, main
from tests.conftest import TOPIC_TASK

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--max_steps",
    "6",
    "--eval_strategy",
    "steps",
    "--eval_steps",
    "3",
    "--logging_steps",
    "3",
    "--learning_rate",
    "1e-3",
    "--disable_tqdm",
    "true",
]


@pytest.fixture(scope="module")
def demo_run(tiny_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo-run")
    metrics = main(
        ["configs/demo.yaml", "--model_name_or_path", str(tiny_dir), "--output_dir", str(output_dir), *FAST]
    )
    return output_dir, metrics


def test_cli_writes_model_tokenizer_results_state_card_and_predictions(demo_run):
    output_dir, metrics = demo_run
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "all_results.json",
        "trainer_state.json",
        "README.md",
        "predictions.jsonl",
        "train_results.json",
        "eval_results.json",
        "test_results.json",
    ):
        assert (output_dir / name).is_file(), name
    assert not list(output_dir.glob("*.bin")) or [p.name for p in output_dir.glob("*.bin")] == ["training_args.bin"]
    results = json.loads((output_dir / "all_results.json").read_text())
    for key in ("eval_sentiment_accuracy", "eval_ner_f1", "test_sentiment_accuracy", "test_ner_f1", "train_loss"):
        assert key in results and results[key] == pytest.approx(metrics[key])
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    keys = set().union(*history)
    assert {
        "sentiment_loss",
        "ner_loss",
        "eval_sentiment_loss",
        "eval_ner_loss",
        "eval_sentiment_accuracy",
        "eval_ner_f1",
    } <= keys


def test_predictions_are_label_names_per_word(demo_run):
    output_dir, _ = demo_run
    records = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 60
    first_test = json.loads((ROOT / "hf_mtl/demo_data/test.jsonl").read_text().splitlines()[0])
    assert records[0]["tokens"] == first_test["tokens"]
    for record in records:
        assert record["sentiment"] in ("negative", "positive")
        assert len(record["ner"]) == len(record["tokens"])
        assert set(record["ner"]) <= set(hf_mtl.tasks.NER_TAGS)


def test_saved_model_reloads_through_auto_model_with_equal_outputs(demo_run):
    output_dir, _ = demo_run
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    batch = tokenizer(["Anna flew to Lisbon ."], return_tensors="pt")
    first = AutoModel.from_pretrained(output_dir).eval()
    second = hf_mtl.MultiTaskModel.from_pretrained(output_dir).eval()
    with torch.no_grad():
        a, b = first(**batch).logits, second(**batch).logits
    for task in ("sentiment", "ner"):
        torch.testing.assert_close(a[task], b[task], rtol=0, atol=0)
    assert first.config.task_specs[1].labels[1] == "B-PER"


def test_model_card_loads_with_both_tasks_in_model_index(demo_run):
    output_dir, metrics = demo_run
    card = ModelCard.load(output_dir / "README.md")
    results = card.data.eval_results
    assert {(r.task_name, r.metric_type, r.dataset_split) for r in results} >= {
        ("sentiment", "accuracy", "validation"),
        ("ner", "f1", "validation"),
        ("ner", "f1", "test"),
    }
    ner_test = next(r for r in results if r.task_name == "ner" and r.dataset_split == "test")
    assert ner_test.metric_value == pytest.approx(metrics["test_ner_f1"])
    assert card.data.library_name == "transformers" and "hf_mtl" in card.data.tags
    text = card.text
    assert "| PER |" in text and "sentiment_loss" in text and "max_steps: 6" in text
    assert "AutoModel.from_pretrained" in text and "## Limitations" in text


def test_third_task_from_a_config_file_trains_and_saves(tiny_dir, tmp_path):
    topics = tmp_path / "topics.tsv"
    topics.write_text(
        "sentence\ttopic\n"
        + "".join(
            f"{text}\t{topic}\n"
            for text, topic in [
                ("the soup was cold", "food"),
                ("our flight was late", "travel"),
                ("great pizza here", "food"),
                ("nice hotel by the sea", "travel"),
                ("the printer broke", "other"),
            ]
            * 4
        )
    )
    config = {
        "model_name_or_path": str(tiny_dir),
        "tasks": hf_mtl.DEFAULT_TASKS + [TOPIC_TASK],
        "datasets": [
            {"name": "demo", "dataset_name": "hf_mtl:demo"},
            {
                "name": "topics",
                "train_file": str(topics),
                "validation_file": str(topics),
                "text_column": "sentence",
                "label_columns": {"topic": "topic"},
            },
        ],
        "output_dir": str(tmp_path / "out"),
        "do_train": True,
        "do_eval": True,
        "report_to": "none",
        "head_hidden_layers": 1,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    metrics = main([str(tmp_path / "run.yaml"), *FAST])
    assert {"eval_topic_accuracy", "eval_topic_loss", "eval_sentiment_accuracy", "eval_ner_f1"} <= set(metrics)
    model = AutoModel.from_pretrained(tmp_path / "out")
    assert [t.name for t in model.config.task_specs] == ["sentiment", "ner", "topic"]
    assert model.heads["topic"].classifier.out_features == 3
    # The config key reaches every head, and the saved config.
    assert model.config.head_hidden_layers == 1 and all(len(head.dense) == 1 for head in model.heads.values())


def test_json_config_and_flag_override(tiny_dir, tmp_path):
    config = {
        "model_name_or_path": str(tiny_dir),
        "output_dir": str(tmp_path / "out"),
        "do_eval": True,
        "max_eval_samples": 10,
        "datasets": [{"name": "demo", "dataset_name": "hf_mtl:demo"}],
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    metrics = main(["--config", str(tmp_path / "run.json"), "--max_eval_samples", "5", "--disable_tqdm", "true"])
    assert metrics["eval_samples"] == 5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--learning_rat", "1"], "unknown argument(s) ['--learning_rat', '1']"),
        (["--tasks", '[{"name": "x", "kind": "span", "labels": ["a", "b"]}]'], "unknown kind 'span'"),
        (
            [
                "--datasets",
                '[{"name": "d", "train_file": "missing.tsv", "text_column": "t", '
                '"label_columns": {"sentiment": "l"}}]',
            ],
            "missing.tsv: no such file",
        ),
        (["--max_seq_length", "2"], "--max_seq_length must be at least 8"),
        (["--head_hidden_layers", "-1"], "--head_hidden_layers must be at least 0"),
        (["--loss_denominator", "tokens"], "--loss_denominator: invalid choice: 'tokens'"),
    ],
)
def test_user_mistakes_exit_2_with_one_line_and_write_nothing(tmp_path, extra, message, monkeypatch, capsys):
    # The CLI entry point in this process (tests/test_bad_inputs.py runs it as its own process).
    output_dir = tmp_path / "out"
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["run_mtl.py", "configs/demo.yaml", "--output_dir", str(output_dir), *extra])
    try:
        returncode = cli()
    except SystemExit as exit:  # argparse's own errors
        returncode = exit.code
    assert returncode == 2
    stderr = capsys.readouterr().err
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("run_mtl.py: error:") and message in last
    assert "Traceback" not in stderr
    assert not output_dir.exists()


def test_unknown_config_key_names_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("learning_rat: 0.1\n")
    with pytest.raises(hf_mtl.HfMtlError, match=r"bad.yaml: unknown key\(s\) \['learning_rat'\]"):
        main([str(tmp_path / "bad.yaml")])


def test_config_value_outside_an_enum_flags_choices_is_one_line(tmp_path):
    # argparse checks a flag's value against its choices, not a file's; unchecked, TrainingArguments would raise a
    # raw ValueError for its IntervalStrategy enum.
    (tmp_path / "bad.yaml").write_text("eval_strategy: sometimes\n")
    message = r"bad.yaml: eval_strategy: invalid choice: 'sometimes' \(choose from 'no', 'steps', 'epoch'\)"
    with pytest.raises(hf_mtl.HfMtlError, match=message):
        main([str(tmp_path / "bad.yaml")])


def test_card_links_the_training_curves_png(demo_run):
    output_dir, _ = demo_run
    png = output_dir / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "![Loss and metric per task](training_curves.png)" in (output_dir / "README.md").read_text()


def test_card_usage_snippet_runs_against_the_saved_model(demo_run):
    output_dir, _ = demo_run
    text = (output_dir / "README.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert str(output_dir) in snippet
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'sentiment': {'label':" in result.stdout and "'entities': [" in result.stdout


def test_card_metadata_is_hub_ready_without_network(demo_run):
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    output_dir, _ = demo_run
    card = ModelCard.load(output_dir / "README.md")
    data = card.data.to_dict()
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == output_dir.name and len(results) == 4
    rebuilt = ModelCardData(
        **{k: v for k, v in data.items() if k != "model-index"}, eval_results=results, model_name=name
    )
    assert rebuilt.to_dict()["model-index"] == data["model-index"]


def test_tensorboard_gets_each_task_as_its_own_scalar(tiny_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output_dir = tmp_path / "out"  # the TensorBoard callback writes under output_dir/runs/
    main(
        [
            "configs/demo.yaml",
            "--model_name_or_path",
            str(tiny_dir),
            "--output_dir",
            str(output_dir),
            "--report_to",
            "tensorboard",
            "--do_predict",
            "false",
            *FAST,
        ]
    )
    events = EventAccumulator(str(next(output_dir.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "train/sentiment_loss",
        "train/ner_loss",
        "eval/sentiment_loss",
        "eval/ner_loss",
        "eval/sentiment_accuracy",
        "eval/ner_f1",
        "eval/ner_PER_f1",
    } <= tags
    # Every training log that holds an NER loss (a window of 3 steps with at least one NER batch) reaches TensorBoard.
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    logged = [entry["ner_loss"] for entry in history if "ner_loss" in entry and "eval_ner_loss" not in entry]
    assert 1 <= len(logged) <= 2  # 6 steps, logged every 3
    assert [event.value for event in events.Scalars("train/ner_loss")] == pytest.approx(logged)
