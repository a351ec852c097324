"""How task losses are combined: static weights, uncertainty weighting, dynamic weight average, or PCGrad.

- `static`: `sum_t w_t L_t` with the config's weights (the default).
- `uncertainty` (Kendall, Gal & Cipolla, 2018): `sum_t w_t (exp(-s_t) L_t + s_t)`, with one learned log-variance
  `s_t` per task, a parameter of the model (saved with it). Computed in `MultiTaskModel.forward`.
- `dwa` (Liu, Johns & Davison, 2019): `w_t = K exp(r_t / T) / sum_i exp(r_i / T)`, `r_t = L_t(k-1) / L_t(k-2)`,
  from the task losses of the last two logging windows. Applied by `MultiTaskTrainer`.
- `pcgrad` (Yu et al., 2020): one backward pass per task on the shared encoder; where two tasks' gradients
  conflict (negative dot product) each is projected onto the other's normal plane before they are summed. Heads
  get their own task's gradient untouched. Applied by `MultiTaskTrainer`.
- `grad_balance`: `w_t = w_t^config * mean_s(n_s) / n_t`, where `n_t` is a running mean of the norm of task t's
  gradient on the shared encoder, measured with one backward pass per task every `grad_balance_steps` steps. Each
  task then moves the shared encoder as much as the others, whatever the size of its loss: a sentence
  cross-entropy's gradient is several times a token cross-entropy's, and Adam, which normalises the summed
  gradient per parameter, would otherwise shrink the smaller task's steps by that factor. Applied by
  `MultiTaskTrainer`.
"""

from __future__ import annotations

import math

import torch
from transformers.utils import ExplicitEnum


class LossWeighting(ExplicitEnum):
    STATIC = "static"
    UNCERTAINTY = "uncertainty"
    DWA = "dwa"
    PCGRAD = "pcgrad"
    GRAD_BALANCE = "grad_balance"


def dwa_weights(history: list[dict[str, float]], tasks: list[str], temperature: float = 2.0) -> dict[str, float]:
    """Dynamic weight average from a history of per-task mean losses (one dict per window, oldest first).

    With fewer than two windows every weight is 1. A task missing from either of the last two windows gets the
    neutral rate `r = 1`. The weights sum to the number of tasks.
    """
    if len(history) < 2:
        return {task: 1.0 for task in tasks}
    previous, before = history[-1], history[-2]
    rates = {task: previous[task] / before[task] if task in previous and before.get(task) else 1.0 for task in tasks}
    exponentials = {task: math.exp(rate / temperature) for task, rate in rates.items()}
    total = sum(exponentials.values())
    return {task: len(tasks) * value / total for task, value in exponentials.items()}


def balance_weights(norms: dict[str, float]) -> dict[str, float]:
    """`mean(n) / n_t` per task (1 for every task when a norm is 0): weights that give every task's gradient the
    mean norm. They average to 1 in harmonic terms, and leave the weights alone when the norms are equal."""
    if not norms or min(norms.values()) <= 0:
        return {task: 1.0 for task in norms}
    mean = sum(norms.values()) / len(norms)
    return {task: mean / norm for task, norm in norms.items()}


def pcgrad_project(gradients: list[torch.Tensor], generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Projects each task's flat gradient off the others' where they conflict (PCGrad, Yu et al. 2020).

    For task `i`, in a random order over the other tasks `j`: if `g_i . g_j < 0`, `g_i -= (g_i . g_j) / |g_j|^2 g_j`
    (with the original `g_j`, as in the paper). Non-conflicting gradients are returned unchanged.
    """
    projected = []
    for i, gradient in enumerate(gradients):
        result = gradient.clone()
        others = [j for j in range(len(gradients)) if j != i]
        order = (
            torch.randperm(len(others), generator=generator).tolist() if generator is not None else range(len(others))
        )
        for index in order:
            other = gradients[others[index]]
            dot = torch.dot(result, other)
            if dot < 0:
                result = result - dot / other.dot(other).clamp(min=1e-20) * other
        projected.append(result)
    return projected


def mean_pairwise_cosine(gradients: list[torch.Tensor]) -> float:
    """Mean cosine similarity over the pairs of task gradients (the interference diagnostic)."""
    values = [
        torch.nn.functional.cosine_similarity(gradients[i], gradients[j], dim=0).item()
        for i in range(len(gradients))
        for j in range(i + 1, len(gradients))
    ]
    return sum(values) / len(values)
