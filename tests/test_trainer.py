import itertools
import math

import pytest
import torch

from hf_mtl import (
    MultiTaskTrainer,
    build_compute_metrics,
    parse_tasks,
    preprocess_logits_for_metrics,
    tokenize_and_align,
)
from hf_mtl.arguments import MultiTaskTrainingArguments
from hf_mtl.data.sources import DEMO_DATASET, load_source, parse_sources

TASKS = parse_tasks(None)


@pytest.fixture(scope="module")
def demo(tokenizer):
    loaded = load_source(parse_sources([{"name": "demo", "dataset_name": DEMO_DATASET}], TASKS)[0], TASKS)
    return {split: tokenize_and_align(rows, tokenizer, TASKS) for split, rows in loaded.splits.items()}


def _trainer(model, tokenizer, tmp_path, train, evaluation, **overrides):
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=overrides.pop("max_steps", 8),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=overrides.pop("learning_rate", 1e-3),
        # These tests read both tasks' losses off every step: batches that hold both tasks, each task's loss its mean
        # cross-entropy in the step (then the Trainer's loss is the sum of the tasks' logged means).
        batch_composition=overrides.pop("batch_composition", "mixed"),
        loss_denominator=overrides.pop("loss_denominator", "labelled"),
        logging_steps=overrides.pop("logging_steps", 4),
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **overrides,
    )
    return MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(TASKS),
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
    )


def test_training_logs_each_task_loss_and_changes_every_parameter(tiny_model, tokenizer, demo, tmp_path):
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    trainer = _trainer(tiny_model, tokenizer, tmp_path, demo["train"], demo["validation"])
    assert trainer.label_names == ["sentiment_labels", "ner_labels"]
    trainer.train()
    history = trainer.state.log_history
    train_logs = [h for h in history if "loss" in h]
    eval_logs = [h for h in history if "eval_loss" in h]
    assert len(train_logs) == 2 and len(eval_logs) == 2
    for log in train_logs:
        assert {"sentiment_loss", "ner_loss"} <= set(log)
        assert all(math.isfinite(log[k]) for k in ("loss", "sentiment_loss", "ner_loss"))
        # Every batch of the demo set labels both tasks with weights 1: the window means add up.
        assert log["loss"] == pytest.approx(log["sentiment_loss"] + log["ner_loss"], rel=1e-4)
    for log in eval_logs:
        assert {"eval_sentiment_loss", "eval_ner_loss", "eval_sentiment_accuracy", "eval_ner_f1"} <= set(log)
        assert {"eval_ner_PER_f1", "eval_combined_score"} <= set(log)
    unchanged = [name for name, p in tiny_model.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []


def test_per_task_batches_train_each_jointly_labelled_row_once_per_task(tiny_model, tokenizer, demo, tmp_path):
    trainer = _trainer(
        tiny_model, tokenizer, tmp_path, demo["train"], demo["validation"], batch_composition="per_task"
    )
    assert len(trainer.train_dataset) == 2 * len(demo["train"])  # every demo row labels both tasks
    for batch in itertools.islice(trainer.get_train_dataloader(), 10):
        labelled = [bool((batch[f"{task}_labels"] != -100).any()) for task in ("sentiment", "ner")]
        assert sum(labelled) == 1


def test_evaluation_on_a_one_task_dataset(tiny_model, tokenizer, demo, tmp_path):
    sentiment_only = demo["validation"].map(lambda row: {"ner_labels": [-100] * len(row["input_ids"])})
    trainer = _trainer(tiny_model, tokenizer, tmp_path, demo["train"], sentiment_only)
    metrics = trainer.evaluate()
    assert "eval_sentiment_accuracy" in metrics and "eval_sentiment_loss" in metrics
    assert not any(key.startswith("eval_ner") for key in metrics)
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert metrics["eval_combined_score"] == metrics["eval_sentiment_accuracy"]


def test_window_average_skips_batches_without_the_task(tiny_model, tokenizer, demo, tmp_path):
    # Half the rows lose their sentiment label: sentiment_loss must average only the batches that have one.
    rows = demo["train"].map(
        lambda row, i: {"sentiment_labels": row["sentiment_labels"] if i % 2 else -100}, with_indices=True
    )
    trainer = _trainer(tiny_model, tokenizer, tmp_path, rows, demo["validation"], max_steps=2, logging_steps=2)
    trainer.train()
    log = next(h for h in trainer.state.log_history if "loss" in h)
    assert math.isfinite(log["sentiment_loss"]) and math.isfinite(log["ner_loss"])
    assert 0.3 < log["sentiment_loss"] < 1.5  # near ln 2 for an untrained binary head, not diluted towards 0


def test_gradient_accumulation_keeps_loss_scale(tiny_model, tokenizer, demo, tmp_path):
    trainer = _trainer(
        tiny_model,
        tokenizer,
        tmp_path,
        demo["train"],
        demo["validation"],
        max_steps=2,
        logging_steps=1,
        gradient_accumulation_steps=2,
        learning_rate=1e-9,
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    for log in logs:
        assert log["loss"] == pytest.approx(log["sentiment_loss"] + log["ner_loss"], rel=1e-3)
