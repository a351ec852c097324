"""Dynamic padding for multi-task batches: encoder inputs by the tokenizer, token labels with -100."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ..heads import IGNORE_INDEX
from .preprocessing import LENGTH_COLUMN


@dataclass
class MultiTaskDataCollator:
    """Pads a list of tokenised rows to the longest row of the batch.

    Encoder inputs are padded by the tokenizer (`tokenizer.pad`); each token task's labels are padded with -100 on
    the tokenizer's padding side, as [`~transformers.DataCollatorForTokenClassification`] does for one task.
    Sentence labels are stacked as they are; a `length` column (kept when `remove_unused_columns=False`) is dropped.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The tokenizer that made the rows.
        token_label_names (`list[str]`): Keys of the token tasks' labels (`["ner_labels"]`).
        pad_to_multiple_of (`int`, *optional*): Round the padded length up to a multiple of this.
    """

    tokenizer: PreTrainedTokenizerBase
    token_label_names: list[str]
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = IGNORE_INDEX

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        token_labels = {
            name: [row[name] for row in features] for name in self.token_label_names if name in features[0]
        }
        rest = [{k: v for k, v in row.items() if k not in token_labels and k != LENGTH_COLUMN} for row in features]
        batch = self.tokenizer.pad(rest, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        length = batch["input_ids"].shape[1]
        for name, rows in token_labels.items():
            padded = []
            for labels in rows:
                padding = [self.label_pad_token_id] * (length - len(labels))
                padded.append(
                    padding + list(labels) if self.tokenizer.padding_side == "left" else list(labels) + padding
                )
            batch[name] = torch.tensor(padded, dtype=torch.long)
        return dict(batch)


def sorted_micro_batches(
    batch: dict[str, Any], pieces: int, sequence_keys: list[str], pad_to_multiple_of: int | None = None
) -> list[dict[str, Any]]:
    """A padded batch's rows, longest first, cut into `pieces` micro-batches of about equal rows, each padded only to
    its own longest row (rounded up to `pad_to_multiple_of`).

    Every tensor with a row per batch row is cut by rows; those of `sequence_keys` (encoder inputs, token labels)
    also lose the padding columns the micro-batch does not need. Only right padding is cut: a batch whose rows do
    not all end in their padding (left padding), or with no `attention_mask`, keeps its width.

    Args:
        batch (`dict[str, Any]`): A collated batch ([`MultiTaskDataCollator`]).
        pieces (`int`): How many micro-batches (at most one per row).
        sequence_keys (`list[str]`): The keys whose second dimension is the token position.
        pad_to_multiple_of (`int`, *optional*): The collator's padding multiple, kept by every micro-batch.
    """
    mask = batch.get("attention_mask")
    rows = len(batch["input_ids"])
    if pieces <= 1 or rows < 2:
        return [batch]
    width = batch["input_ids"].shape[1]
    if mask is not None:
        lengths = mask.sum(dim=1)
        right_padded = torch.equal(mask.bool(), torch.arange(width, device=mask.device) < lengths[:, None])
        if not right_padded:
            lengths = torch.full_like(lengths, width)
    else:
        lengths = torch.full((rows,), width, device=batch["input_ids"].device)
    order = torch.argsort(lengths, descending=True, stable=True)
    micro_batches = []
    for index in torch.tensor_split(order, min(pieces, rows)):
        keep = int(lengths[index].max())
        if pad_to_multiple_of:
            keep = min(width, -(-keep // pad_to_multiple_of) * pad_to_multiple_of)
        micro_batch = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and len(value) == rows:
                value = value[index]
                if key in sequence_keys:
                    value = value[:, :keep]
            micro_batch[key] = value
        micro_batches.append(micro_batch)
    return micro_batches
