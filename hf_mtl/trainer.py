"""`MultiTaskTrainer`: the Hugging Face Trainer, with each task's loss logged on its own."""

from __future__ import annotations

import contextlib
import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, IterableDataset
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalPrediction, PredictionOutput, has_length, seed_worker
from transformers.utils import logging

from .cpu import threads_per_process
from .data.collator import MultiTaskDataCollator, sorted_micro_batches
from .data.sampling import LengthSortedSampler, labelled_positions_per_row, split_by_task, training_sampler
from .errors import HfMtlError
from .heads import IGNORE_INDEX
from .loss_weighting import LossWeighting, balance_weights, dwa_weights, mean_pairwise_cosine, pcgrad_project
from .metrics import best_per_task, merge_dataset_metrics
from .model_card import ModelCardInputs, build_model_card, library_versions, non_default_arguments
from .optimization import SHARED_STATE_KEY, PerTaskAdamW, layerwise_learning_rates, regroup_by_learning_rate
from .packaged_encoder import hub_id_of
from .plots import plot_training_curves
from .weight_averaging import WeightAveragingCallback

logger = logging.get_logger(__name__)


class _TaskLossMeter:
    """Sums of each task's loss and the number of steps that labelled it, for one logging window (tensors or
    floats: nothing is read out each step)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, torch.Tensor | float] = {}

    def add(self, task: str, total: torch.Tensor | float, count: torch.Tensor | float = 1.0) -> None:
        self.sums[task] = self.sums.get(task, 0.0) + total
        self.counts[task] = self.counts.get(task, 0.0) + count

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()


class MultiTaskTrainer(Trainer):
    """A [`~transformers.Trainer`] for [`MultiTaskModel`].

    On top of the Trainer it:
    - takes `label_names` from the model's tasks (`sentiment_labels`, `ner_labels`) unless `args.label_names` is set;
    - pads batches with [`MultiTaskDataCollator`] when no `data_collator` is given;
    - under `train_sampling_strategy="group_by_length"`, draws batches of similar length in a random order
      ([`ShuffledLengthGroupedSampler`]), not from the longest to the shortest; with per-task batches (the default)
      only sentence tasks' batches, token tasks' are random rows unless `args.length_group_token_tasks`;
    - evaluates and predicts the rows from the longest to the shortest (`args.eval_sort_by_length`, the default), so
      that evaluation batches pad little, and returns predictions, and hands them to `compute_metrics`, in the
      data's order (the Trainer, under `group_by_length`, would group evaluation batches by length too and return
      predictions shuffled);
    - sets this process's intra-op threads (`args.torch_num_threads`, or a share of the cores per process when
      several train on one machine);
    - normalises each task's loss over the whole optimizer step, as transformers does for a causal LM under
      gradient accumulation: each task's summed cross-entropy is divided by that task's labelled positions over
      every micro-batch of the step and every process (`num_items_in_batch`, a dict per task), so that a step's
      gradient is that of one pooled batch whatever the accumulation or the number of processes. With
      `loss_denominator="expected"` (the default with length-grouped token batches: [`resolve_loss_denominator`]),
      by the step's rows labelling the task times the task's mean labelled positions per row in the training set;
    - logs each task's loss: `sentiment_loss`, `ner_loss` in training (the mean of the task's per-step mean
      cross-entropies over the logging window; under `loss_denominator="expected"` each step weighted by its
      labelled positions over its denominator) and `eval_sentiment_loss`, `eval_ner_loss` in evaluation (the
      mean cross-entropy over every labelled position of the set, whatever its batches), each summed and counted
      across processes before averaging. A step that labels no position of a task does not count for that task's
      average;
    - gives the heads their own learning rate when `args.head_learning_rate` is set, and the encoder's layers rates
      that fall layer by layer from the top when `args.layerwise_lr_decay` is set;
    - ends training with the weights' exponential moving average when `args.ema_decay` is set
      ([`WeightAveragingCallback`]), saved in every checkpoint and restored on resume.
    """

    def __init__(self, model=None, args=None, data_collator=None, processing_class=None, **kwargs):
        threads = threads_per_process(getattr(args, "torch_num_threads", None))
        if threads is not None:
            torch.set_num_threads(threads)
        if (
            isinstance(kwargs.get("train_dataset"), IterableDataset)
            and args.accelerator_config.dispatch_batches is None
        ):
            # A stream is read by every process, each keeping its own shard (by file, else by batch), rather than
            # read by the first process alone and sent to the others.
            args.accelerator_config.dispatch_batches = False
        given_optimizer = (kwargs.get("optimizers") or (None, None))[0]
        if getattr(args, "per_task_optimizer_state", False) and (
            (given_optimizer is not None and not isinstance(given_optimizer, PerTaskAdamW))
            or kwargs.get("optimizer_cls_and_kwargs") is not None
        ):
            raise HfMtlError(
                "--per_task_optimizer_state builds hf_mtl.PerTaskAdamW itself: pass no optimizer to the trainer, or "
                "pass a PerTaskAdamW"
            )
        if getattr(args, "batch_composition", "mixed") == "per_task" and isinstance(
            kwargs.get("train_dataset"), Dataset
        ):
            # Every step trains one task: a jointly labelled row comes once per task it labels.
            label_keys = [task.label_key for task in model.task_specs]
            kwargs["train_dataset"] = split_by_task(kwargs["train_dataset"], label_keys)
        if data_collator is None and processing_class is not None and model is not None:
            token_keys = [task.label_key for task in model.config.task_specs if task.is_token_task]
            data_collator = MultiTaskDataCollator(processing_class, token_label_names=token_keys)
        super().__init__(
            model=model, args=args, data_collator=data_collator, processing_class=processing_class, **kwargs
        )
        unwrapped = self.accelerator.unwrap_model(self.model)
        config = unwrapped.config
        self.task_specs = list(unwrapped.task_specs)
        if self.args.label_names is None:
            self.label_names = list(config.label_names)
        self._task_losses = {"train": _TaskLossMeter(), "eval": _TaskLossMeter()}
        self._diagnostics = _TaskLossMeter()  # grad_cosine, averaged over a logging window like the losses
        self.weighting = LossWeighting(getattr(self.args, "loss_weighting", LossWeighting.STATIC))
        uses_uncertainty = config.loss_weighting == LossWeighting.UNCERTAINTY
        if uses_uncertainty != (self.weighting == LossWeighting.UNCERTAINTY):
            raise HfMtlError(
                f"--loss_weighting {self.weighting.value} but the model was built with loss_weighting="
                f"{config.loss_weighting!r}; uncertainty weighting needs MultiTaskConfig(loss_weighting='uncertainty')"
            )
        self._window_history: list[dict[str, float]] = []  # per-task window means, for DWA
        # Dynamic factors on the config weights: DWA's, or grad_balance's (from `_grad_norms`, running means).
        self._dwa = {task.name: 1.0 for task in self.task_specs}
        self._grad_norms: dict[str, float] = {}
        self._pcgrad_generator = torch.Generator().manual_seed(self.args.seed)
        self.loss_denominator = resolve_loss_denominator(self.args, self.train_dataset)
        if getattr(self.args, "loss_denominator", "labelled") is None:
            logger.info(f"loss_denominator: {self.loss_denominator} (the default for this run's batches and data)")
        # Under `loss_denominator="expected"`: each task's mean labelled positions per row of the training set.
        self._positions_per_row: dict[str, float] | None = None
        if self.loss_denominator == "expected" and self.train_dataset is not None:
            if not isinstance(self.train_dataset, Dataset):
                raise HfMtlError("--loss_denominator expected needs a map-style training set (not a stream)")
            keys = [task.label_key for task in self.task_specs]
            self._positions_per_row = labelled_positions_per_row(self.train_dataset, keys)
        self.final_metrics: dict[str, float] = {}  # the last evaluate / predict results, for the model card
        ema_decay = getattr(self.args, "ema_decay", None)
        self.weight_averaging = WeightAveragingCallback(ema_decay) if ema_decay is not None else None
        if self.weight_averaging is not None:
            self.add_callback(self.weight_averaging)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.weight_averaging is not None and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self.weight_averaging.save(folder)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.weight_averaging is not None:
            self.weight_averaging.resume_from(resume_from_checkpoint)

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        # The Trainer drops the columns the model does not take (`length` among them) before it asks for a
        # sampler; the original training set has the same rows in the same order, and still has `length`.
        original = self.train_dataset
        if original is not None and has_length(dataset) and has_length(original) and len(original) == len(dataset):
            dataset = original
        sampler = training_sampler(dataset, self.args, [task.label_key for task in self.task_specs])
        return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self) -> DataLoader:
        """The Trainer's training DataLoader, or, under `token_batches_by_words` (batches of varying size), one that
        takes hf_mtl's batches from a [`TaskHomogeneousBatchSampler`] as its `batch_sampler`."""
        if not getattr(self.args, "token_batches_by_words", False) or self.train_dataset is None:
            return super().get_train_dataloader()
        if self.args.world_size > 1:
            raise HfMtlError("--token_batches_by_words trains in one process; run without torchrun or turn it off")
        sampler = self._get_train_sampler()
        dataset = self._remove_unused_columns(self.train_dataset, description="Training")
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers,
            multiprocessing_context=self.args.dataloader_multiprocessing_context,
            prefetch_factor=self.args.dataloader_prefetch_factor,
            in_order=self.args.dataloader_in_order,
            worker_init_fn=partial(seed_worker, num_workers=self.args.dataloader_num_workers, rank=0),
        )
        return self.accelerator.prepare(loader)

    def _get_eval_sampler(self, eval_dataset) -> torch.utils.data.Sampler | None:
        # Row i of `predict()`'s output must be row i of the dataset (predictions.jsonl is written from it): rows
        # evaluated longest first (`eval_sort_by_length`) are put back in order by `evaluation_loop`.
        if eval_dataset is None or not has_length(eval_dataset) or self.args.world_size > 1:
            return None
        if (
            getattr(self.args, "eval_sort_by_length", True)
            and isinstance(eval_dataset, Dataset)
            and self.args.eval_do_concat_batches  # predictions as one array per output, which can be reordered
            and not self.args.batch_eval_metrics  # metrics from each batch as it comes
        ):
            input_name = getattr(self.accelerator.unwrap_model(self.model), "main_input_name", "input_ids")
            sampler = LengthSortedSampler.from_dataset(eval_dataset, input_name)
            if sampler is not None:
                return sampler
        return SequentialSampler(eval_dataset)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> dict[str, torch.Tensor] | None:
        """Each task's loss denominator over the micro-batches of one optimizer step (and over every process, with
        `average_tokens_across_devices`): see [`loss_denominators`]. Evaluation always uses the labelled positions."""
        if not batch_samples:
            return None
        keys = [(task.name, task.label_key) for task in self.task_specs]
        per_row = self._positions_per_row if self.model.training else None
        counts = loss_denominators(batch_samples, [key for _, key in keys], per_row).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            counts = self.accelerator.gather(counts).reshape(-1, len(keys)).sum(dim=0)
        return {name: count for (name, _), count in zip(keys, counts)}

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, with learning rates of their own (in groups of their own, weight decay as the
        Trainer sets it, scheduled like the others) for the heads under `args.head_learning_rate` and for the encoder's
        layers under `args.layerwise_lr_decay`."""
        optimizer = super().create_optimizer(model)
        unwrapped = self.accelerator.unwrap_model(self.model if model is None else model)
        rates: dict[int, float] = {}
        if getattr(self.args, "layerwise_lr_decay", None) is not None:
            rates |= layerwise_learning_rates(unwrapped, self.args.learning_rate, self.args.layerwise_lr_decay)
        if getattr(self.args, "head_learning_rate", None) is not None:
            rates |= {id(p): self.args.head_learning_rate for p in unwrapped.heads.parameters()}
        if rates:
            regroup_by_learning_rate(optimizer, rates)
        if isinstance(optimizer, PerTaskAdamW) and (
            self.args.gradient_accumulation_steps > 1 or self.args.world_size > 1
        ):
            logger.warning(
                "--per_task_optimizer_state: a step accumulates %d batch(es) on %d process(es); steps whose "
                "batches hold several tasks use moments of their own, shared by no single-task step",
                self.args.gradient_accumulation_steps,
                self.args.world_size,
            )
        return optimizer

    @staticmethod
    def get_optimizer_cls_and_kwargs(args, model=None) -> tuple[Any, Any]:
        """The Trainer's optimizer class and options; under `per_task_optimizer_state`, [`PerTaskAdamW`] in place of
        AdamW, with the same options (`get_batch_samples` tells it which tasks each step trains)."""
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        if getattr(args, "per_task_optimizer_state", False):
            if optimizer_cls is not torch.optim.AdamW:  # the arguments allow only --optim adamw_torch(_fused)
                raise HfMtlError(f"--per_task_optimizer_state replaces AdamW, but --optim gives {optimizer_cls}")
            optimizer_cls = PerTaskAdamW
        return optimizer_cls, optimizer_kwargs

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # under the accelerator's wrapper
        if isinstance(optimizer, PerTaskAdamW) and batch_samples:
            optimizer.task_key = self._step_task_key(batch_samples, device)
        return batch_samples, num_items_in_batch

    def _step_task_key(self, batch_samples: list[dict[str, Any]], device: torch.device) -> str:
        """The tasks an optimizer step trains (labelled in any of its micro-batches, on any process), joined by
        `+`: the key of [`PerTaskAdamW`]'s moment estimates for the step."""
        present = torch.tensor(
            [
                any(bool((batch[key] != IGNORE_INDEX).any()) for batch in batch_samples if key in batch)
                for key in (task.label_key for task in self.task_specs)
            ],
            device=device,
        )
        if self.args.world_size > 1:  # every process must step with the same key
            present = self.accelerator.gather(present.int()).reshape(-1, len(self.task_specs)).amax(dim=0).bool()
        names = [task.name for task, trained in zip(self.task_specs, present.tolist()) if trained]
        return "+".join(names) or SHARED_STATE_KEY

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        if self.args.label_smoothing_factor:
            # Applied by each head to its own labels: the Trainer's label smoother only knows a single `labels` key.
            inputs = {**inputs, "label_smoothing": self.args.label_smoothing_factor}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and self.weighting in (LossWeighting.DWA, LossWeighting.GRAD_BALANCE):
            weights = {t.name: t.weight for t in self.task_specs}
            loss = sum(self._dwa[t] * weights[t] * task_loss for t, task_loss in outputs["task_losses"].items())
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as the Trainer scales the model's loss
        meter = self._task_losses["train" if model.training else "eval"]
        for task, task_loss in (outputs.get("task_losses") or {}).items():
            labelled = (inputs[f"{task}_labels"] != IGNORE_INDEX).sum()
            denominator = num_items_in_batch.get(task) if num_items_in_batch else None
            denominator = (labelled if denominator is None else denominator).clamp(min=1)
            if model.training:
                # The step's loss of the task comes in parts, one per micro-batch: together they count as one step.
                meter.add(task, task_loss.detach(), labelled / denominator)
            else:
                # The mean over every labelled position (row, for a sentence task) of the set, however it is batched.
                meter.add(task, task_loss.detach() * denominator, labelled)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        """The Trainer's step, except with PCGrad, and on logging steps when `log_grad_cosine` asks for the
        cosine between the tasks' gradients on the shared encoder: there each task gets its own backward pass."""
        logging_step = (self.state.global_step + 1) % max(int(self.args.logging_steps), 1) == 0
        cosine = getattr(self.args, "log_grad_cosine", False) and logging_step
        balance_step = (
            self.weighting == LossWeighting.GRAD_BALANCE and self.state.global_step % self.args.grad_balance_steps == 0
        )
        if self.weighting != LossWeighting.PCGRAD and not cosine and not balance_step:
            pieces = getattr(self.args, "sorted_micro_batches", None) or 1
            if pieces > 1 and num_items_in_batch is not None:
                return self._sorted_micro_batch_step(model, inputs, num_items_in_batch, pieces)
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
        # Normalised over the whole step (`num_items_in_batch`): no further division by the accumulation steps.
        scale = 1.0 if num_items_in_batch is not None else 1.0 / self.current_gradient_accumulation_steps
        unwrapped = self.accelerator.unwrap_model(model)
        shared = all_shared = [p for p in unwrapped.encoder.parameters() if p.requires_grad]
        weights = {t.name: t.weight for t in self.task_specs}
        present = [t for t in outputs["task_losses"] if bool((inputs[f"{t}_labels"] != IGNORE_INDEX).any())]
        per_task = [
            torch.autograd.grad(weights[t] * outputs["task_losses"][t], shared, retain_graph=True, allow_unused=True)
            for t in present
        ]
        # Parameters no task reached this step (a pooler the heads do not read) get no gradient at all, as in a
        # plain backward pass; DDP has already marked them as unused.
        used = [any(grads[i] is not None for grads in per_task) for i in range(len(shared))]
        shared = [p for p, is_used in zip(shared, used) if is_used]
        gradients = [
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p, u in zip(grads, all_shared, used)
                    if u
                ]
            )
            for grads in per_task
        ]
        if cosine and len(gradients) > 1:
            self._diagnostics.add("grad_cosine", mean_pairwise_cosine(gradients))
        if balance_step:
            self._update_grad_balance(
                {t: float(g.norm()) / weights[t] for t, g in zip(present, gradients) if weights[t]}
            )
        if self.weighting != LossWeighting.PCGRAD or len(gradients) < 2:
            self.accelerator.backward(loss * scale)
            return loss.detach() * scale
        combined = torch.stack(pcgrad_project(gradients, self._pcgrad_generator)).sum(dim=0)
        shared_ids = {id(p) for p in all_shared}
        others = [p for p in unwrapped.parameters() if p.requires_grad and id(p) not in shared_ids]
        other_grads = torch.autograd.grad(loss, others, allow_unused=True, retain_graph=True)
        # A surrogate whose gradient is exactly the projected one: backward through it goes through the
        # accelerator (and so through DDP's all-reduce), like any other loss.
        surrogate = sum((p * g).sum() for p, g in zip(shared, _unflatten(combined, shared)))
        surrogate = surrogate + sum((p * g).sum() for p, g in zip(others, other_grads) if g is not None)
        self.accelerator.backward(surrogate * scale)
        return loss.detach() * scale

    def _sorted_micro_batch_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: dict[str, torch.Tensor], pieces: int
    ) -> torch.Tensor:
        """`args.sorted_micro_batches`: the Trainer's step on each micro-batch of rows of similar length
        ([`sorted_micro_batches`]) in turn. Each task's loss is divided by its count over the whole optimizer step
        (`num_items_in_batch`), so the parts add up to the whole batch's loss and gradient; gradients are
        synchronised across processes once, with the last part."""
        token_keys = [task.label_key for task in self.task_specs if task.is_token_task]
        sequence_keys = ["input_ids", "attention_mask", "token_type_ids", *token_keys]
        multiple = getattr(self.data_collator, "pad_to_multiple_of", None)
        parts = sorted_micro_batches(inputs, pieces, sequence_keys, multiple)
        loss = 0.0
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                loss = loss + super().training_step(model, part, num_items_in_batch)
        return loss

    def _update_grad_balance(self, norms: dict[str, float], momentum: float = 0.9) -> None:
        """Folds this step's per-task gradient norms (of the unweighted losses) into their running means, then sets
        the dynamic weights to `mean(n) / n_t`. The first measurement of a task is taken as it is."""
        for task, norm in norms.items():
            previous = self._grad_norms.get(task)
            self._grad_norms[task] = norm if previous is None else momentum * previous + (1 - momentum) * norm
        if self.args.world_size > 1:
            tasks = sorted(self._grad_norms)
            values = torch.tensor([self._grad_norms[t] for t in tasks], device=self.args.device)
            values = self.accelerator.reduce(values, reduction="mean")
            self._grad_norms = dict(zip(tasks, values.tolist()))
        factors = balance_weights(self._grad_norms)
        self._dwa = {task: factors.get(task, 1.0) for task in self._dwa}

    def _reduce_task_losses(self, mode: str) -> dict[str, float]:
        """Averages the window's task losses over every process (sum of sums / sum of counts), then resets."""
        return self._reduce(self._task_losses[mode], [task.name for task in self.task_specs])

    def _reduce(self, meter: _TaskLossMeter, tasks: list[str]) -> dict[str, float]:
        totals = torch.tensor(
            [[float(meter.sums.get(task, 0.0)), float(meter.counts.get(task, 0.0))] for task in tasks],
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
            window = self._reduce_task_losses("train")
            logs.update({f"{task}_loss": loss for task, loss in window.items()})
            logs.update({f"weight_{task}": weight for task, weight in self.current_task_weights().items()})
            logs.update({f"grad_norm_{task}": norm for task, norm in self._grad_norms.items()})
            logs.update(self._reduce(self._diagnostics, ["grad_cosine"]))
            self._window_history.append(window)
            if self.weighting == LossWeighting.DWA:
                tasks = list(self._dwa)
                self._dwa = dwa_weights(self._window_history[-2:], tasks, self.args.dwa_temperature)
        super().log(logs, start_time)

    def current_task_weights(self) -> dict[str, float]:
        """The weight each task's loss has now: static, learned (uncertainty) or dynamic (DWA)."""
        weights = self.accelerator.unwrap_model(self.model).task_weights()
        if self.weighting in (LossWeighting.DWA, LossWeighting.GRAD_BALANCE):
            weights = {task: weight * self._dwa[task] for task, weight in weights.items()}
        return weights

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """As [`~transformers.Trainer.evaluate`]; with one evaluation set per corpus (a dict), each set's metrics come
        prefixed with its name and are also merged per task, with a `combined_score` over tasks (logged too).

        With several sets, callbacks get one `on_evaluate` with every set's metrics and the merged ones (the Trainer
        would call it once per set, with that set's keys only), so that `EarlyStoppingCallback` and
        `metric_for_best_model` see `eval_combined_score`.
        """
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(datasets, dict):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            self.final_metrics.update(metrics)
            return metrics
        handler = self.callback_handler
        handler.on_evaluate = lambda args, state, control, metrics: control  # once per set: not yet
        try:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            del handler.on_evaluate
        tasks = self.accelerator.unwrap_model(self.model).config.task_specs
        merged = merge_dataset_metrics(metrics, metric_key_prefix, list(datasets), tasks)
        if merged:
            self.log(dict(merged))
            metrics.update(merged)
        self.control = handler.on_evaluate(self.args, self.state, self.control, metrics)
        self.final_metrics.update(metrics)
        return metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test") -> PredictionOutput:
        """As [`~transformers.Trainer.predict`]; with one test set per corpus (a dict, as `evaluate` takes), returns
        each corpus's predictions and label ids in dicts keyed by corpus, and metrics prefixed per corpus
        (`test_wnut17_ner_f1`) and merged per task (`test_ner_f1`, `test_combined_score`)."""
        if not isinstance(test_dataset, dict):
            output = super().predict(test_dataset, ignore_keys, metric_key_prefix)
            self.final_metrics.update(output.metrics)
            return output
        predictions, label_ids, metrics = {}, {}, {}
        for name, dataset in test_dataset.items():
            output = super().predict(dataset, ignore_keys, f"{metric_key_prefix}_{name}")
            predictions[name], label_ids[name] = output.predictions, output.label_ids
            metrics.update(output.metrics)
        tasks = self.accelerator.unwrap_model(self.model).config.task_specs
        metrics.update(merge_dataset_metrics(metrics, metric_key_prefix, list(test_dataset), tasks))
        metrics[f"{metric_key_prefix}_samples"] = sum(len(dataset) for dataset in test_dataset.values())
        self.final_metrics.update(metrics)
        return PredictionOutput(predictions=predictions, label_ids=label_ids, metrics=metrics)

    def create_model_card(
        self,
        model_name: str | None = None,
        language: str | list[str] | None = None,
        license: str | None = None,
        finetuned_from: str | None = None,
        sources: list | None = None,
        example_text: str | None = None,
        mixing: str | None = None,
        **kwargs,
    ) -> None:
        """Writes hf_mtl's model card (`README.md`: model-index per task, per-type entity table, training curves,
        loss weights, best checkpoint per task), `training_curves.png` and `best_per_task.json` to `output_dir`.

        [`~transformers.Trainer.push_to_hub`] calls it before uploading the folder, so the card it uploads is this
        one. Metrics are the last `evaluate` and `predict` results of this trainer, merged per task.

        Args:
            model_name (`str`, *optional*): Defaults to the output folder's name.
            language (`str` or `list[str]`, *optional*): The card's `language` metadata (left out when unknown).
            license (`str`, *optional*): Defaults to the base model's license, when known.
            finetuned_from (`str`, *optional*): The encoder's Hub id (default: where the encoder was loaded from,
                when that is a Hub id).
            sources (`list[DataSourceConfig]`, *optional*): The corpora trained on, for the data table and
                model-index.
            example_text (`str`, *optional*): The widget's and the usage snippet's input (default: the first
                evaluation row, decoded).
            mixing (`str`, *optional*): How the corpora were mixed.
            kwargs: The Trainer's other card arguments (`tags`, `tasks`, `dataset`, ...): not used by this card.
        """
        if not self.is_world_process_zero():
            return
        output_dir = Path(self.args.output_dir)
        model = self.accelerator.unwrap_model(self.model)
        tasks = model.config.task_specs
        base_model = finetuned_from if finetuned_from is not None else hub_id_of(model.config.encoder._name_or_path)
        best = best_per_task(self.state.log_history, tasks)
        if best:
            (output_dir / "best_per_task.json").write_text(json.dumps(best, indent=2) + "\n")
        curves = "training_curves.png"
        has_curves = plot_training_curves(self.state.log_history, tasks, output_dir / curves)
        inputs = ModelCardInputs(
            model_name=model_name or output_dir.name,
            tasks=tasks,
            base_model=base_model,
            sources=list(sources or []),
            metrics=dict(self.final_metrics),
            log_history=self.state.log_history,
            hyperparameters=non_default_arguments(self.args),
            license=license,
            mixing=mixing,
            max_seq_length=model.config.max_seq_length,
            curves_file=curves if has_curves else None,
            loss_weighting=str(self.weighting.value),
            best_per_task=best,
            sentence_pooling=model.config.sentence_pooling,
            encoder_pooler=model.config.encoder_pooler,
            language=language,
            example_text=example_text or self._first_evaluation_text(),
            versions=library_versions(),
        )
        card = build_model_card(inputs, model_path=self.hub_model_id or self.args.hub_model_id or str(output_dir))
        card.save(output_dir / "README.md")

    def _first_evaluation_text(self) -> str | None:
        datasets = self.eval_dataset.values() if isinstance(self.eval_dataset, dict) else [self.eval_dataset]
        for dataset in datasets:
            if dataset is not None and self.processing_class is not None and has_length(dataset) and len(dataset):
                return self.processing_class.decode(dataset[0]["input_ids"], skip_special_tokens=True)
        return None

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """The Trainer's loop, plus each task's evaluation loss; rows evaluated longest first (`LengthSortedSampler`)
        reach `compute_metrics` and the returned predictions in the data's order."""
        self._task_losses["eval"].reset()
        # Accelerate's loader keeps the sampler in its batch sampler.
        sampler = getattr(getattr(dataloader, "batch_sampler", None), "sampler", None)
        inverse = sampler.inverse if isinstance(sampler, LengthSortedSampler) else None
        compute_metrics = self.compute_metrics
        if inverse is not None and compute_metrics is not None:
            self.compute_metrics = partial(_metrics_in_order, compute_metrics, inverse)
        try:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        finally:
            self.compute_metrics = compute_metrics
        if inverse is not None:
            output = output._replace(
                predictions=in_order(output.predictions, inverse), label_ids=in_order(output.label_ids, inverse)
            )
        for task, loss in self._reduce_task_losses("eval").items():
            output.metrics[f"{metric_key_prefix}_{task}_loss"] = loss
        return output


def _metrics_in_order(compute_metrics, inverse: np.ndarray, prediction: EvalPrediction) -> dict[str, float]:
    parts = (prediction.predictions, prediction.label_ids, prediction.inputs, prediction.losses)
    return compute_metrics(EvalPrediction(*(in_order(part, inverse) for part in parts)))


def in_order(outputs: Any, inverse: np.ndarray) -> Any:
    """Evaluation outputs gathered in a sampler's order (arrays, or lists, tuples and dicts of them, one row per
    evaluated row) put back in the data's order: row i of each array becomes `array[inverse][i]`."""
    if isinstance(outputs, dict):
        return {key: in_order(value, inverse) for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(in_order(value, inverse) for value in outputs)
    if isinstance(outputs, (np.ndarray, torch.Tensor)) and outputs.ndim and len(outputs) == len(inverse):
        return outputs[inverse]
    return outputs


def resolve_loss_denominator(args: TrainingArguments, train_dataset: Any) -> str:
    """The loss denominator `args` asks for (`args.loss_denominator`), or by default: `"expected"` when token tasks
    train on length-grouped batches of a map-style training set (a step of short rows would otherwise weigh each
    of its tokens more than a step of long rows), `"labelled"` otherwise (random batches, where the two about agree,
    and streams, whose mean labelled positions per row are unknown). Plain `TrainingArguments`: `"labelled"`."""
    chosen = getattr(args, "loss_denominator", "labelled")
    if chosen is not None:
        return chosen
    length_grouped_tokens = (
        args.train_sampling_strategy == "group_by_length"
        and getattr(args, "length_group_token_tasks", False)
        and not getattr(args, "token_batches_by_words", False)
    )
    return "expected" if length_grouped_tokens and isinstance(train_dataset, Dataset) else "labelled"


def loss_denominators(
    batches: list[dict[str, Any]], label_keys: list[str], positions_per_row: dict[str, float] | None = None
) -> torch.Tensor:
    """Each task's loss denominator over the micro-batches of one optimizer step, in `label_keys` order: its labelled
    positions (`loss_denominator="labelled"`), or, given `positions_per_row` (each label key's mean labelled
    positions per row of the training set; `loss_denominator="expected"`), the step's rows that label the task
    times that mean. The second weighs every labelled token alike in every step, however long the step's rows."""

    def count(batch: dict[str, Any], key: str) -> torch.Tensor:
        labels = batch.get(key)
        if labels is None:
            return torch.tensor(0) if positions_per_row is None else torch.tensor(0.0)
        labelled = labels != IGNORE_INDEX
        if positions_per_row is None:
            return labelled.sum()
        return labelled.reshape(len(labelled), -1).any(dim=1).sum() * positions_per_row[key]

    return torch.stack([sum(count(batch, key) for batch in batches) for key in label_keys])


def _unflatten(flat: torch.Tensor, parameters: list[nn.Parameter]) -> list[torch.Tensor]:
    pieces, offset = [], 0
    for parameter in parameters:
        pieces.append(flat[offset : offset + parameter.numel()].view_as(parameter))
        offset += parameter.numel()
    return pieces


__all__ = ["MultiTaskTrainer"]
