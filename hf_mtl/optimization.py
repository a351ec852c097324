"""AdamW with one set of moment estimates per task, for per-task batches (every optimizer step trains one task)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch

from .errors import HfMtlError

SHARED_STATE_KEY = "all"


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
