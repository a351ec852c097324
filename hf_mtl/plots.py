"""Per-task training curves as a PNG for the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .metrics import primary_metric
from .tasks import TaskSpec


def _series(log_history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
    return [step for step, _ in points], [value for _, value in points]


def plot_training_curves(log_history: list[dict[str, Any]], tasks: list[TaskSpec], path: str | Path) -> bool:
    """Draws each task's training and evaluation loss (left) and its evaluation metric (right) against the step.

    Returns `False`, writing nothing, when the log holds no per-task loss.
    """
    if not any(_series(log_history, f"{task.name}_loss")[0] for task in tasks):
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    figure, (losses, metrics) = plt.subplots(1, 2, figsize=(11, 4))
    for index, task in enumerate(tasks):
        colour = f"C{index}"
        losses.plot(*_series(log_history, f"{task.name}_loss"), color=colour, label=f"{task.name} train")
        steps, values = _series(log_history, f"eval_{task.name}_loss")
        if steps:
            losses.plot(steps, values, color=colour, linestyle="--", marker="o", label=f"{task.name} eval")
        steps, values = _series(log_history, f"eval_{primary_metric(task)}")
        if steps:
            metrics.plot(steps, values, color=colour, marker="o", label=primary_metric(task))
    losses.set(title="Loss per task", xlabel="step", ylabel="cross-entropy")
    metrics.set(title="Evaluation metric per task", xlabel="step", ylim=(0, 1))
    for axes in (losses, metrics):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
