"""`--ema_decay`: training ends with the exponential moving average of the weights, computed here by hand, and a
resumed run ends with the same average as an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertTokenizerFast, TrainerCallback

from hf_mtl import MultiTaskConfig, MultiTaskModel, MultiTaskTrainer
from hf_mtl.arguments import MultiTaskTrainingArguments
from hf_mtl.errors import HfMtlError
from hf_mtl.weight_averaging import EMA_WEIGHTS_NAME

ROWS = [{"input_ids": [2, 4, 4, 3], "sentiment_labels": i % 2, "ner_labels": [-100] * 4} for i in range(12)]
ROWS += [{"input_ids": [2, 4, 3], "sentiment_labels": -100, "ner_labels": [-100, i % 3, -100]} for i in range(12)]


class _RecordWeights(TrainerCallback):
    """The parameters after every optimizer step (before any average is put in)."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps.append({name: p.detach().clone() for name, p in model.named_parameters()})


def _trainer(output_dir, **kwargs) -> MultiTaskTrainer:
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])})
    args = MultiTaskTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=4, learning_rate=0.05, report_to="none",
        disable_tqdm=True, batch_composition="per_task", **kwargs,
    )  # fmt: skip
    torch.manual_seed(0)
    encoder = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    model = MultiTaskModel(MultiTaskConfig(encoder=encoder))
    return MultiTaskTrainer(model, args, train_dataset=Dataset.from_list(ROWS), processing_class=tokenizer)


def test_training_ends_with_the_moving_average_of_every_steps_weights(tmp_path):
    decay = 0.6
    trainer = _trainer(tmp_path, max_steps=5, save_strategy="no", ema_decay=decay)
    recorder = _RecordWeights()
    trainer.add_callback(recorder)
    trainer.train()
    assert len(recorder.steps) == 5
    for name, final in trainer.model.named_parameters():
        expected = recorder.steps[0][name]  # the first step copies the weights
        for weights in recorder.steps[1:]:
            expected = decay * expected + (1 - decay) * weights[name]
        torch.testing.assert_close(final.detach(), expected, rtol=1e-5, atol=1e-6, msg=name)
    moved = (
        recorder.steps[-1]["heads.sentiment.classifier.weight"]
        - recorder.steps[0]["heads.sentiment.classifier.weight"]
    )
    assert moved.abs().max() > 1e-3  # the weights moved, so the average is not just the last step's weights


def test_resuming_a_checkpoint_ends_with_the_uninterrupted_runs_average(tmp_path):
    options = {"max_steps": 6, "save_strategy": "steps", "save_steps": 3, "ema_decay": 0.5}
    whole = _trainer(tmp_path / "whole", **options)
    whole.train()
    assert (tmp_path / "whole" / "checkpoint-3" / EMA_WEIGHTS_NAME).is_file()
    interrupted = _trainer(tmp_path / "whole", **options)
    interrupted.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-3"))
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(interrupted.model.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_a_decay_outside_0_1_or_beside_load_best_model_at_end_is_refused():
    with pytest.raises(HfMtlError, match=r"^--ema_decay must be between 0 and 1 \(exclusive\), got 1.0$"):
        MultiTaskTrainingArguments(output_dir="unused", ema_decay=1.0, report_to="none")
    with pytest.raises(HfMtlError, match=r"^--ema_decay and --load_best_model_at_end both choose"):
        MultiTaskTrainingArguments(
            output_dir="unused", ema_decay=0.9, load_best_model_at_end=True, eval_strategy="epoch",
            save_strategy="epoch", report_to="none",
        )  # fmt: skip
