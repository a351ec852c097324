"""Task heads: each owns its dropout, optional hidden layers and linear classifier, knows its kind, and computes its
own loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN

from .tasks import TaskSpec

IGNORE_INDEX = -100


class TaskHead(nn.Module):
    """Dropout + linear layer over the encoder's output, with a masked cross-entropy loss. With `hidden_layers` > 0,
    that many `hidden_size`-wide dense layers, each followed by the activation and dropout, come before the linear
    layer (`RobertaClassificationHead` is one such layer with tanh).

    Args:
        task (`TaskSpec`): The task this head predicts.
        hidden_size (`int`): Width of the encoder's output.
        dropout (`float`): Dropout probability before the linear layer (and before each hidden layer).
        hidden_layers (`int`, *optional*, defaults to 0): Dense layers between the encoder and the linear layer.
        activation (`str`, *optional*, defaults to `"gelu"`): The hidden layers' activation (a `transformers`
            `ACT2FN` name; `MultiTaskModel` passes the encoder's `hidden_act`).
    """

    def __init__(
        self, task: TaskSpec, hidden_size: int, dropout: float, hidden_layers: int = 0, activation: str = "gelu"
    ):
        super().__init__()
        self.task = task
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(hidden_layers))
        self.activation = ACT2FN[activation]
        self.classifier = nn.Linear(hidden_size, len(task.labels))

    def select_features(self, sequence_output: torch.Tensor, pooled_output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, sequence_output: torch.Tensor, pooled_output: torch.Tensor) -> torch.Tensor:
        features = self.dropout(self.select_features(sequence_output, pooled_output))
        for dense in self.dense:
            features = self.dropout(self.activation(dense(features)))
        return self.classifier(features)

    def loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        label_smoothing: float = 0.0,
        num_items: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Summed cross-entropy over the labelled positions, divided by `num_items` (the labelled positions of the
        whole optimizer step), or by this batch's labelled positions when `num_items` is `None` (the batch mean).

        Exactly 0 (never NaN) when nothing is labelled: a batch drawn from a corpus labelled for another task
        carries only `-100` for this task, and then adds nothing to the loss and nothing to the gradients. With
        `label_smoothing` = ε the target is `1 - ε` on the gold label plus `ε / num_labels` on every label, the
        Trainer's `label_smoothing_factor` rule; positions labelled -100 still count for nothing.
        """
        labels = labels.to(logits.device).reshape(-1)
        logits = logits.reshape(-1, logits.shape[-1]).float()
        total = F.cross_entropy(
            logits, labels, ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=label_smoothing
        )
        count = (labels != IGNORE_INDEX).sum() if num_items is None else torch.as_tensor(num_items)
        return total / count.to(total.device, total.dtype).clamp(min=1)


class SequenceClassificationHead(TaskHead):
    """One prediction per sequence, from the pooled [CLS] output."""

    def select_features(self, sequence_output: torch.Tensor, pooled_output: torch.Tensor) -> torch.Tensor:
        return pooled_output


class TokenClassificationHead(TaskHead):
    """One prediction per token, from every position of the last hidden state."""

    def select_features(self, sequence_output: torch.Tensor, pooled_output: torch.Tensor) -> torch.Tensor:
        return sequence_output


def build_head(
    task: TaskSpec, hidden_size: int, dropout: float, hidden_layers: int = 0, activation: str = "gelu"
) -> TaskHead:
    head_class = TokenClassificationHead if task.is_token_task else SequenceClassificationHead
    return head_class(task, hidden_size, dropout, hidden_layers, activation)
