"""The optimizer's learning rate per parameter (the heads' own rate, layer-wise decay over the encoder) and AdamW
with one set of moment estimates per task, for per-task batches (every optimizer step trains one task)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch

from .errors import HfMtlError
from .modeling_mtl import MultiTaskModel, encoder_layers

SHARED_STATE_KEY = "all"


def layerwise_learning_rates(model: MultiTaskModel, learning_rate: float, decay: float) -> dict[int, float]:
    """The learning rates of layer-wise decay over a [`MultiTaskModel`]'s encoder, by parameter `id`.

    The top layer (with `task_specific_layers`, each task's own top layer) gets `learning_rate`, each layer below
    `decay` times the rate of the layer above it, and the encoder's other parameters (the embeddings, and what every
    layer shares, such as DeBERTa's relative position embeddings) `decay` times the lowest layer's rate. The pooler,
    above the layers, and the heads are left out (they keep the optimizer's rate).
    """
    try:
        shared = encoder_layers(model.encoder)
    except HfMtlError:
        raise HfMtlError(
            f"--layerwise_lr_decay: the {model.encoder.config.model_type} encoder has no list of layers named "
            "`layer` (ALBERT shares one layer's weights across its depth)"
        ) from None
    task_depth = len(next(iter(model.task_layers.values()))) if len(model.task_layers) else 0
    depth = len(shared) + task_depth
    rates = {}
    stacks = [(shared, 0)] + [(layers, len(shared)) for layers in model.task_layers.values()]
    for layers, first in stacks:
        for index, layer in enumerate(layers, start=first):
            rates |= {id(p): learning_rate * decay ** (depth - 1 - index) for p in layer.parameters()}
    pooler = getattr(model.encoder, "pooler", None)
    above = {id(p) for p in pooler.parameters()} if pooler is not None else set()
    for p in model.encoder.parameters():
        if id(p) not in rates and id(p) not in above:
            rates[id(p)] = learning_rate * decay**depth
    return rates


def regroup_by_learning_rate(optimizer: torch.optim.Optimizer, rates: dict[int, float]) -> None:
    """Moves each parameter whose `id` is in `rates` into a group with that learning rate, made from its group's other
    options (weight decay, ...) and added after the existing groups in their order; groups left empty are dropped.
    The layout is the same on a second call, so optimizer states saved with it load again."""
    kept, added = [], []
    for group in optimizer.param_groups:
        options = {key: value for key, value in group.items() if key != "params"}
        remaining = [p for p in group["params"] if id(p) not in rates]
        if remaining:
            kept.append({**options, "params": remaining})
        by_rate: dict[float, list] = {}
        for p in group["params"]:
            if id(p) in rates:
                by_rate.setdefault(rates[id(p)], []).append(p)
        for lr, params in by_rate.items():
            scheduled = {"initial_lr": lr} if "initial_lr" in options else {}
            added.append({**options, "params": params, "lr": lr, **scheduled})
    optimizer.param_groups.clear()
    for group in kept + added:
        optimizer.add_param_group(group)


class PerTaskAdamW(torch.optim.AdamW):
    """[`torch.optim.AdamW`] that keeps each parameter's moment estimates and step count per task.

    With one AdamW over a shared encoder and steps that alternate between tasks, the first moment carries the other
    task's gradients into every step (a step of task A moves mostly along B's momentum), and the second moment scales
    every step by the larger of the two tasks' gradient sizes, so the task with smaller gradients takes smaller steps
    than it would alone. Here the step of a task reads and updates that task's estimates only (as MTAdam, Malkiel &
    Wolf 2020, keeps per-loss moments), so each task's sequence of updates is the one its own AdamW would make from
    the same gradients; the parameters and the learning-rate schedule stay shared.

    The trainer sets `task_key` before each step (the tasks the step trains, e.g. `"ner"` or `"ner+sentiment"`); a
    step of several tasks has estimates of its own. With a single key throughout, this is AdamW exactly.

    Measured against hf_mtl's default (one AdamW) in `benchmarks/quality.py` (`task_adam`, docs/BENCHMARKS.md), it
    cost the token tasks on both SST-2 pairs: an option for experiments, not the default.

    Args:
        params: Parameters or parameter groups, as for [`torch.optim.AdamW`].
        **kwargs: AdamW's options (`lr`, `betas`, `eps`, `weight_decay`, ...).
    """

    def __init__(self, params: Iterable, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.task_key = SHARED_STATE_KEY
        self._add_state_hooks()

    def _add_state_hooks(self) -> None:
        # AdamW's step reads `self.state[p]`: around each step, that is the current task's entry of p's state. A
        # step that raised leaves that swap in place; the next step or state_dict() undoes it first.
        self._per_task_state: defaultdict | None = None
        self._step_key = SHARED_STATE_KEY
        self.register_step_pre_hook(_select_task_state)
        self.register_step_post_hook(lambda optimizer, args, kwargs: _restore_per_task_state(optimizer))
        self.register_state_dict_pre_hook(_restore_per_task_state)
        self.register_load_state_dict_pre_hook(lambda optimizer, state_dict: _restore_per_task_state(optimizer))

    def __setstate__(self, state: dict) -> None:
        # Adam's `__setstate__` expects a flat state per parameter; the per-task entries are kept as they are.
        per_task = state.get("state", {})
        if any("exp_avg" in entry for entry in per_task.values()):
            raise HfMtlError(
                "this optimizer state holds one set of AdamW moments, not one per task: it was saved without "
                "--per_task_optimizer_state; resume with the same setting it was trained with"
            )
        super().__setstate__({**state, "state": defaultdict(dict)})
        self.state = defaultdict(dict, per_task)
        if not hasattr(self, "task_key"):  # unpickled (a copy): hooks and key are not part of the pickled state
            self.task_key = SHARED_STATE_KEY
            self._add_state_hooks()


def _select_task_state(optimizer: PerTaskAdamW, args, kwargs) -> None:
    _restore_per_task_state(optimizer)
    optimizer._per_task_state, optimizer._step_key = optimizer.state, optimizer.task_key
    optimizer.state = defaultdict(dict)
    for group in optimizer.param_groups:
        for param in group["params"]:
            optimizer.state[param] = optimizer._per_task_state[param].setdefault(optimizer._step_key, {})


def _restore_per_task_state(optimizer: PerTaskAdamW) -> None:
    if optimizer._per_task_state is None:
        return
    per_task, optimizer.state, optimizer._per_task_state = optimizer._per_task_state, optimizer._per_task_state, None
    for param, states in list(per_task.items()):
        if not states.get(optimizer._step_key, True):
            del states[optimizer._step_key]  # no gradient this step: no state for this task
        if not states:
            del per_task[param]


__all__ = ["PerTaskAdamW", "SHARED_STATE_KEY"]
