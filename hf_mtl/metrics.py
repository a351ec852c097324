"""`compute_metrics` built from the task config: accuracy and macro-F1 per sentence task, seqeval entity scores per
token task, and a `combined_score` for `metric_for_best_model`. No download: seqeval and scikit-learn are called
directly, since `evaluate.load(...)` needs the Hub."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from seqeval.metrics import classification_report
from sklearn.metrics import accuracy_score, f1_score
from transformers import EvalPrediction

from .heads import IGNORE_INDEX
from .tasks import TaskSpec


def preprocess_logits_for_metrics(logits: dict[str, torch.Tensor], labels) -> dict[str, torch.Tensor]:
    """Keeps only each task's arg-max, so evaluation does not hold every logit in memory."""
    return {name: task_logits.argmax(dim=-1) for name, task_logits in logits.items()}


def sequence_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    mask = labels != IGNORE_INDEX
    if not mask.any():
        return {}
    y_true, y_pred = labels[mask], predictions[mask]
    return {
        f"{task.name}_accuracy": float(accuracy_score(y_true, y_pred)),
        f"{task.name}_macro_f1": float(
            f1_score(y_true, y_pred, labels=list(range(len(task.labels))), average="macro", zero_division=0)
        ),
    }


def token_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval, conlleval rules), overall and per entity type."""
    true_tags, pred_tags = [], []
    for row_predictions, row_labels in zip(predictions, labels):
        mask = row_labels != IGNORE_INDEX
        if mask.any():
            true_tags.append([task.labels[i] for i in row_labels[mask]])
            pred_tags.append([task.labels[i] for i in row_predictions[mask]])
    if not true_tags:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on types with no predicted or no gold entity
        report = classification_report(true_tags, pred_tags, output_dict=True, zero_division=0)
    flat_true = np.concatenate([np.asarray(row) for row in true_tags])
    flat_pred = np.concatenate([np.asarray(row) for row in pred_tags])
    overall = report["micro avg"]
    metrics = {
        f"{task.name}_precision": float(overall["precision"]),
        f"{task.name}_recall": float(overall["recall"]),
        f"{task.name}_f1": float(overall["f1-score"]),
        f"{task.name}_accuracy": float((flat_true == flat_pred).mean()),
    }
    for entity in task.entity_types:
        scores = report.get(entity, {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
        metrics[f"{task.name}_{entity}_precision"] = float(scores["precision"])
        metrics[f"{task.name}_{entity}_recall"] = float(scores["recall"])
        metrics[f"{task.name}_{entity}_f1"] = float(scores["f1-score"])
        metrics[f"{task.name}_{entity}_number"] = int(scores["support"])
    return metrics


def primary_metric(task: TaskSpec) -> str:
    """The metric that stands for a task in `combined_score` and the model card: accuracy or entity F1."""
    return f"{task.name}_f1" if task.is_token_task else f"{task.name}_accuracy"


def build_compute_metrics(tasks: list[TaskSpec]) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` for [`~transformers.Trainer`] from the model's tasks.

    Predictions come as `{task: array}` (arg-max ids, or logits if `preprocess_logits_for_metrics` was not used);
    labels come in task order (`Trainer.label_names`). Positions labelled -100 are dropped, so a task evaluated on
    a data set that does not label it simply reports nothing, never NaN.
    """

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions = eval_prediction.predictions
        label_ids = eval_prediction.label_ids
        if len(tasks) == 1 and not isinstance(label_ids, (tuple, list)):
            label_ids = (label_ids,)
        metrics: dict[str, float] = {}
        for task, labels in zip(tasks, label_ids):
            task_predictions = np.asarray(predictions[task.name])
            if task_predictions.ndim == np.asarray(labels).ndim + 1:
                task_predictions = task_predictions.argmax(-1)
            scorer = token_metrics if task.is_token_task else sequence_metrics
            metrics.update(scorer(task, task_predictions, np.asarray(labels)))
        primaries = [metrics[primary_metric(task)] for task in tasks if primary_metric(task) in metrics]
        if primaries:
            metrics["combined_score"] = float(np.mean(primaries))
        return metrics

    return compute_metrics


def merge_dataset_metrics(
    metrics: dict[str, float], prefix: str, dataset_names: list[str], tasks: list[TaskSpec]
) -> dict[str, float]:
    """Task-level metrics from per-data-set ones (`eval_sst2_sentiment_accuracy` -> `eval_sentiment_accuracy`).

    A task scored on one data set takes that data set's metrics (and loss) unprefixed; a task scored on several gets
    the mean of its primary metric. `{prefix}_combined_score` is the mean over tasks of their primary metric, so
    `metric_for_best_model=combined_score` works with one evaluation set per task.
    """
    merged: dict[str, float] = {}
    for task in tasks:
        primary = primary_metric(task)
        reporting = [name for name in dataset_names if f"{prefix}_{name}_{primary}" in metrics]
        if len(reporting) == 1:
            source_prefix = f"{prefix}_{reporting[0]}_{task.name}_"
            for key, value in metrics.items():
                if key.startswith(source_prefix):
                    merged[f"{prefix}_{task.name}_{key[len(source_prefix) :]}"] = value
        elif reporting:
            merged[f"{prefix}_{primary}"] = float(
                np.mean([metrics[f"{prefix}_{name}_{primary}"] for name in reporting])
            )
    primaries = [
        merged[f"{prefix}_{primary_metric(task)}"] for task in tasks if f"{prefix}_{primary_metric(task)}" in merged
    ]
    if primaries:
        merged[f"{prefix}_combined_score"] = float(np.mean(primaries))
    return merged


def best_per_task(log_history: list[dict], tasks: list[TaskSpec], prefix: str = "eval") -> dict[str, dict]:
    """For each task, the step and value of its best evaluation (of its primary metric) during training."""
    best = {}
    for task in tasks:
        key = f"{prefix}_{primary_metric(task)}"
        scored = [(entry[key], entry["step"]) for entry in log_history if key in entry and "step" in entry]
        if scored:
            value, step = max(scored, key=lambda pair: (pair[0], -pair[1]))  # the earliest of equal bests
            best[task.name] = {"metric": key, "value": value, "step": step, "checkpoint": f"checkpoint-{step}"}
    return best


__all__ = [
    "best_per_task",
    "build_compute_metrics",
    "merge_dataset_metrics",
    "preprocess_logits_for_metrics",
    "primary_metric",
]
