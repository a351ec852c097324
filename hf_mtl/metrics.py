"""`compute_metrics` built from the task config: accuracy and macro-F1 per sentence task, seqeval entity scores per
token task, and a `combined_score` for `metric_for_best_model`.

The scores come from `evaluate` modules shipped in this package (`hf_mtl/evaluate_modules/<name>/<name>.py`) and
loaded from that path, so nothing is downloaded and `evaluate.load(metric_path(name))` gives users the same metrics.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import evaluate
import numpy as np
import torch
from transformers import EvalPrediction

from .heads import IGNORE_INDEX
from .tasks import TaskSpec

EVALUATE_MODULES_DIR = Path(__file__).resolve().parent / "evaluate_modules"
METRIC_NAMES = ("hf_mtl_accuracy", "hf_mtl_macro_f1", "hf_mtl_seqeval")
_NO_ENTITY = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 0}


def metric_path(name: str) -> str:
    """The folder of one of hf_mtl's `evaluate` modules, for `evaluate.load(metric_path("hf_mtl_seqeval"))`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown hf_mtl metric {name!r}; choose from {list(METRIC_NAMES)}")
    return str(EVALUATE_MODULES_DIR / name)


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """One of hf_mtl's `evaluate` modules (`hf_mtl_accuracy`, `hf_mtl_macro_f1`, `hf_mtl_seqeval`), loaded from its
    folder in the package, once per process.

    `keep_in_memory=True`: `compute` then writes no cache file or lock (the default writes both under
    `HF_METRICS_CACHE`). No `num_process`/`process_id`: under torchrun the Trainer gathers predictions to every
    process before `compute_metrics`, so each process computes on its own, without evaluate's file rendez-vous.
    """
    return evaluate.load(metric_path(name), keep_in_memory=True)


def preprocess_logits_for_metrics(logits: dict[str, torch.Tensor], labels) -> dict[str, torch.Tensor]:
    """Keeps only each task's arg-max, so evaluation does not hold every logit in memory."""
    return {name: task_logits.argmax(dim=-1) for name, task_logits in logits.items()}


def sequence_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over the rows with a label; macro-F1 averages over all the task's labels."""
    mask = labels != IGNORE_INDEX
    if not mask.any():
        return {}
    references, predictions = labels[mask], predictions[mask]
    accuracy = load_metric("hf_mtl_accuracy").compute(predictions=predictions, references=references)
    macro_f1 = load_metric("hf_mtl_macro_f1").compute(
        predictions=predictions, references=references, labels=list(range(len(task.labels))), zero_division=0
    )
    return {f"{task.name}_accuracy": accuracy["accuracy"], f"{task.name}_macro_f1": macro_f1["macro_f1"]}


def token_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval, conlleval rules), overall and per entity type, and token accuracy.

    Every entity type of the task is reported, with zeros (and `number` 0) for a type absent from the data.
    """
    true_tags, pred_tags = [], []
    for row_predictions, row_labels in zip(predictions, labels):
        mask = row_labels != IGNORE_INDEX
        if mask.any():
            true_tags.append([task.labels[i] for i in row_labels[mask]])
            pred_tags.append([task.labels[i] for i in row_predictions[mask]])
    if not true_tags:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on tags it does not read as IOB2
        scores = load_metric("hf_mtl_seqeval").compute(predictions=pred_tags, references=true_tags, zero_division=0)
    metrics = {
        f"{task.name}_precision": scores["overall_precision"],
        f"{task.name}_recall": scores["overall_recall"],
        f"{task.name}_f1": scores["overall_f1"],
        f"{task.name}_accuracy": scores["overall_accuracy"],
    }
    for entity in task.entity_types:
        entity_scores = scores.get(entity, _NO_ENTITY)
        for key in ("precision", "recall", "f1", "number"):
            metrics[f"{task.name}_{entity}_{key}"] = entity_scores[key]
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
    "METRIC_NAMES",
    "best_per_task",
    "build_compute_metrics",
    "load_metric",
    "merge_dataset_metrics",
    "metric_path",
    "preprocess_logits_for_metrics",
    "primary_metric",
]
