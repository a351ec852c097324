"""`MultiTaskTrainer`: the Hugging Face Trainer, with each task's loss logged on its own."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Trainer

from .data.collator import MultiTaskDataCollator
from .heads import IGNORE_INDEX
from .metrics import merge_dataset_metrics


class _TaskLossMeter:
    """Sums of each task's loss and the number of batches that labelled it, for one logging window."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, task: str, loss: float) -> None:
        self.sums[task] = self.sums.get(task, 0.0) + loss
        self.counts[task] = self.counts.get(task, 0) + 1

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()


class MultiTaskTrainer(Trainer):
    """A [`~transformers.Trainer`] for [`MultiTaskModel`].

    On top of the Trainer it:
    - takes `label_names` from the model's tasks (`sentiment_labels`, `ner_labels`) unless `args.label_names` is set;
    - pads batches with [`MultiTaskDataCollator`] when no `data_collator` is given;
    - logs each task's loss: `sentiment_loss`, `ner_loss` in training (averaged over the logging window) and
      `eval_sentiment_loss`, `eval_ner_loss` in evaluation (averaged over the evaluation set), each summed and
      counted across processes before averaging. A batch that labels no position of a task does not count for
      that task's average.
    """

    def __init__(self, model=None, args=None, data_collator=None, processing_class=None, **kwargs):
        if data_collator is None and processing_class is not None and model is not None:
            token_keys = [task.label_key for task in model.config.task_specs if task.is_token_task]
            data_collator = MultiTaskDataCollator(processing_class, token_label_names=token_keys)
        super().__init__(
            model=model, args=args, data_collator=data_collator, processing_class=processing_class, **kwargs
        )
        if self.args.label_names is None:
            self.label_names = list(self.accelerator.unwrap_model(self.model).config.label_names)
        self._task_losses = {"train": _TaskLossMeter(), "eval": _TaskLossMeter()}

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        meter = self._task_losses["train" if model.training else "eval"]
        for task, task_loss in (outputs.get("task_losses") or {}).items():
            labels = inputs.get(f"{task}_labels")
            if labels is not None and bool((labels != IGNORE_INDEX).any()):
                meter.add(task, task_loss.detach().item())
        return (loss, outputs) if return_outputs else loss

    def _reduce_task_losses(self, mode: str) -> dict[str, float]:
        """Averages the window's task losses over every process (sum of sums / sum of counts), then resets."""
        meter = self._task_losses[mode]
        tasks = [task.name for task in self.accelerator.unwrap_model(self.model).config.task_specs]
        totals = torch.tensor(
            [[meter.sums.get(task, 0.0), float(meter.counts.get(task, 0))] for task in tasks],
            dtype=torch.float64,
            device=self.args.device,
        )
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        meter.reset()
        return {task: total / count for task, (total, count) in zip(tasks, totals.tolist()) if count > 0}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # The training loop's window log is the one with `loss` (not `train_loss`, nor any `eval_` key).
        if "loss" in logs and not any(key.startswith("eval_") for key in logs):
            logs.update({f"{task}_loss": loss for task, loss in self._reduce_task_losses("train").items()})
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """As [`~transformers.Trainer.evaluate`]; with one evaluation set per corpus (a dict), each set's metrics come
        prefixed with its name and are also merged per task, with a `combined_score` over tasks (logged too)."""
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if isinstance(datasets, dict):
            tasks = self.accelerator.unwrap_model(self.model).config.task_specs
            merged = merge_dataset_metrics(metrics, metric_key_prefix, list(datasets), tasks)
            if merged:
                self.log(dict(merged))
                metrics.update(merged)
        return metrics

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        self._task_losses["eval"].reset()
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        for task, loss in self._reduce_task_losses("eval").items():
            output.metrics[f"{metric_key_prefix}_{task}_loss"] = loss
        return output


__all__ = ["MultiTaskTrainer"]
