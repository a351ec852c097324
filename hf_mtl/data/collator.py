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
