"""Evaluation in batches of rows of similar length (`eval_sort_by_length`): same predictions, metrics and task losses
as in the data's order, returned in the data's order, with less padding."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch import nn

from hf_mtl import MultiTaskTrainer, build_compute_metrics, parse_tasks, tokenize_and_align
from hf_mtl.arguments import MultiTaskTrainingArguments
from hf_mtl.data.sampling import LengthSortedSampler
from hf_mtl.data.sources import DEMO_DATASET, load_source, parse_sources
from hf_mtl.heads import IGNORE_INDEX

TASKS = parse_tasks(None)


@pytest.fixture(scope="module")
def validation(tokenizer):
    loaded = load_source(parse_sources([{"name": "demo", "dataset_name": DEMO_DATASET}], TASKS)[0], TASKS)
    return tokenize_and_align(loaded.splits["validation"], tokenizer, TASKS)


def _trainer(model, tokenizer, tmp_path, sort: bool, compute_metrics=None) -> MultiTaskTrainer:
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path / ("sorted" if sort else "in_order")),
        per_device_eval_batch_size=4,
        eval_sort_by_length=sort,
        report_to="none",
        disable_tqdm=True,
    )
    return MultiTaskTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        compute_metrics=compute_metrics or build_compute_metrics(TASKS),
    )


def test_length_sorted_sampler_yields_the_longest_rows_first_and_its_inverse_restores_the_order():
    sampler = LengthSortedSampler([3, 5, 1, 5, 2])
    assert list(sampler) == [1, 3, 0, 4, 2]  # rows of equal length (1 and 3) keep the data's order
    assert len(sampler) == 5
    outputs = np.array([10, 30, 0, 40, 20])[sampler.order]  # outputs gathered in the sampler's order
    assert outputs[sampler.inverse].tolist() == [10, 30, 0, 40, 20]


def test_sorted_evaluation_gives_the_scores_predictions_and_task_losses_of_the_data_order(
    tiny_model, tokenizer, validation, tmp_path
):
    tiny_model.eval()
    seen = []

    def recording_metrics(prediction):
        seen.append(prediction.label_ids)
        return build_compute_metrics(TASKS)(prediction)

    in_order = _trainer(tiny_model, tokenizer, tmp_path, sort=False).predict(validation)
    sorted_trainer = _trainer(tiny_model, tokenizer, tmp_path, sort=True, compute_metrics=recording_metrics)
    loader = sorted_trainer.get_eval_dataloader(validation)
    lengths = [batch["attention_mask"].sum(dim=1).tolist() for batch in loader]
    assert lengths[0][0] == max(len(ids) for ids in validation["input_ids"])
    flat = [length for batch in lengths for length in batch]
    assert flat == sorted(flat, reverse=True)
    sorted_output = sorted_trainer.predict(validation)

    # Predictions and labels come back in the data's order, to compute_metrics too.
    sentiment = np.array(validation["sentiment_labels"])
    labels_seen = dict(zip(["sentiment_labels", "ner_labels"], seen[0])) if isinstance(seen[0], tuple) else seen[0]
    np.testing.assert_array_equal(np.asarray(labels_seen["sentiment_labels"]).reshape(-1), sentiment)
    for mine, theirs in zip(sorted_output.label_ids, in_order.label_ids):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_allclose(sorted_output.predictions["sentiment"], in_order.predictions["sentiment"], atol=1e-5)
    # Token logits agree on each row's own tokens; past them, a row holds padding's logits up to its batch's length.
    for row, ids in enumerate(validation["input_ids"]):
        mine, theirs = sorted_output.predictions["ner"][row], in_order.predictions["ner"][row]
        np.testing.assert_allclose(mine[: len(ids)], theirs[: len(ids)], atol=1e-5)
    for key in ("test_sentiment_accuracy", "test_ner_f1", "test_ner_precision", "test_ner_recall"):
        assert sorted_output.metrics[key] == in_order.metrics[key], key

    # Each task's loss is the mean cross-entropy over the labelled positions of the set, computed here row by row.
    totals = {"sentiment": [0.0, 0], "ner": [0.0, 0]}
    with torch.no_grad():
        for row in validation:
            inputs = {key: torch.tensor([row[key]]) for key in ("input_ids", "attention_mask", "token_type_ids")}
            logits = tiny_model(**inputs).logits
            for task in ("sentiment", "ner"):
                labels = torch.tensor(row[f"{task}_labels"]).reshape(-1)
                scores = logits[task].reshape(labels.numel(), -1)
                labelled = labels != IGNORE_INDEX
                if labelled.any():
                    loss = nn.functional.cross_entropy(scores[labelled], labels[labelled], reduction="sum")
                    totals[task][0] += loss.item()
                    totals[task][1] += int(labelled.sum())
    for task, (total, count) in totals.items():
        assert count > 0
        for output in (sorted_output, in_order):
            assert output.metrics[f"test_{task}_loss"] == pytest.approx(total / count, rel=1e-5), task

    # Sorted batches pad less: padded positions over the set.
    loaders = {s: _trainer(tiny_model, tokenizer, tmp_path, bool(s)).get_eval_dataloader(validation) for s in (0, 1)}
    padded = {s: sum(batch["input_ids"].numel() for batch in loader) for s, loader in loaders.items()}
    assert padded[1] < padded[0]
    assert padded[1] >= sum(len(ids) for ids in validation["input_ids"])


def test_evaluation_stays_in_the_data_order_when_metrics_come_batch_by_batch(tiny_model, tokenizer, tmp_path):
    trainer = _trainer(tiny_model, tokenizer, tmp_path, sort=True)
    trainer.args.batch_eval_metrics = True
    rows = Dataset.from_dict({"input_ids": [[1, 2], [1, 2, 3, 4], [1]]})
    assert list(trainer._get_eval_sampler(rows)) == [0, 1, 2]
    trainer.args.batch_eval_metrics = False
    assert list(trainer._get_eval_sampler(rows)) == [1, 0, 2]
