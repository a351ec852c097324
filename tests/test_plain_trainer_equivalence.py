"""hf_mtl's single-task training path is the plain `Trainer`'s: with the same weights, rows, batch order and no
dropout, `MultiTaskTrainer` + `MultiTaskModel` and `Trainer` + `BertFor{Token,Sequence}Classification` take the same
steps, so any gap between rows (a) and (b) of the quality benchmark comes from the seed's draws (head
initialisation, batch order, dropout masks), not from the training code."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from hf_mtl import MultiTaskConfig, MultiTaskModel, MultiTaskTrainer
from hf_mtl.arguments import MultiTaskTrainingArguments

ENCODER_KWARGS = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
)  # fmt: skip
ENCODER = BertConfig(**ENCODER_KWARGS)
SHARED = {
    "learning_rate": 1e-3, "per_device_train_batch_size": 4, "max_steps": 6, "train_sampling_strategy": "sequential",
    "logging_steps": 1, "report_to": "none", "save_strategy": "no", "disable_tqdm": True, "use_cpu": True,
    "bf16": False, "seed": 0,
}  # fmt: skip


def _rows(token_task: bool) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(12):
        length = 4 + i % 5
        ids = [2] + torch.randint(5, 100, (length - 2,), generator=generator).tolist() + [3]
        if token_task:
            labels = [-100] + torch.randint(0, 5, (length - 2,), generator=generator).tolist() + [-100]
        else:
            labels = i % 3
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": labels})
    return rows


@pytest.mark.parametrize("token_task", [True, False], ids=["token_task", "sentence_task"])
def test_hf_mtl_single_task_training_takes_the_plain_trainers_steps(tmp_path, tokenizer, token_task):
    torch.manual_seed(0)
    if token_task:
        plain = BertForTokenClassification(BertConfig(**ENCODER_KWARGS, num_labels=5))
        task = {"name": "ner", "kind": "token_classification", "labels": ["O", "B-A", "I-A", "B-B", "I-B"]}
        collator = DataCollatorForTokenClassification(tokenizer)
    else:
        plain = BertForSequenceClassification(BertConfig(**ENCODER_KWARGS, num_labels=3))
        task = {"name": "sentiment", "kind": "sequence_classification", "labels": ["neg", "neu", "pos"]}
        collator = DataCollatorWithPadding(tokenizer)
    mine = MultiTaskModel(MultiTaskConfig(encoder=ENCODER, tasks=[task], sentence_pooling="pooler"))
    # The same starting point: the plain model's encoder (and pooler) and classifier.
    missing, unexpected = mine.encoder.load_state_dict(plain.bert.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("pooler.") for key in missing)
    mine.heads[task["name"]].classifier.load_state_dict(plain.classifier.state_dict())
    initial = plain.classifier.weight.detach().clone()

    rows = _rows(token_task)
    label_key = f"{task['name']}_labels"
    plain_trainer = Trainer(
        plain, TrainingArguments(str(tmp_path / "plain"), **SHARED), train_dataset=Dataset.from_list(rows),
        data_collator=collator,
    )  # fmt: skip
    plain_trainer.train()
    mine_rows = [{**{k: v for k, v in row.items() if k != "labels"}, label_key: row["labels"]} for row in rows]
    mine_trainer = MultiTaskTrainer(
        mine, MultiTaskTrainingArguments(str(tmp_path / "mine"), batch_composition="mixed", **SHARED),
        train_dataset=Dataset.from_list(mine_rows), processing_class=tokenizer,
    )  # fmt: skip
    mine_trainer.train()

    plain_losses = [entry["loss"] for entry in plain_trainer.state.log_history if "loss" in entry]
    mine_losses = [entry["loss"] for entry in mine_trainer.state.log_history if "loss" in entry]
    assert len(plain_losses) == len(mine_losses) == 6
    torch.testing.assert_close(torch.tensor(mine_losses), torch.tensor(plain_losses), rtol=1e-4, atol=1e-5)
    # After six optimizer steps the weights are the same.
    for name, parameter in plain.bert.named_parameters():
        torch.testing.assert_close(mine.encoder.get_parameter(name), parameter, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine.heads[task["name"]].classifier.weight, plain.classifier.weight)
    assert (plain.classifier.weight - initial).abs().max() > 1e-3  # both trained, not both left where they began
