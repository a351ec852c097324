"""`PerTaskAdamW` (AdamW's moments per task) against AdamW written out by hand, and through the Trainer."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertTokenizerFast

from hf_mtl import MultiTaskConfig, MultiTaskModel, MultiTaskTrainer
from hf_mtl.arguments import MultiTaskTrainingArguments
from hf_mtl.errors import HfMtlError
from hf_mtl.optimization import PerTaskAdamW

LR, BETAS, EPS, WEIGHT_DECAY = 0.1, (0.9, 0.999), 1e-8, 0.01


def _adamw_by_hand(start: list[float], steps: list[tuple[str, list[float]]]) -> list[list[float]]:
    """AdamW's update (decoupled weight decay, bias-corrected moments) in plain Python floats, with one set of
    moments and one step count per key: the parameter after each step."""
    param, moments, trajectory = list(start), {}, []
    for key, grad in steps:
        m, v, t = moments.get(key, ([0.0] * len(param), [0.0] * len(param), 0))
        t += 1
        m = [BETAS[0] * a + (1 - BETAS[0]) * g for a, g in zip(m, grad)]
        v = [BETAS[1] * b + (1 - BETAS[1]) * g * g for b, g in zip(v, grad)]
        moments[key] = (m, v, t)
        param = [
            p * (1 - LR * WEIGHT_DECAY) - LR * (a / (1 - BETAS[0] ** t)) / (math.sqrt(b / (1 - BETAS[1] ** t)) + EPS)
            for p, a, b in zip(param, m, v)
        ]
        trajectory.append(param)
    return trajectory


STEPS = [
    ("ner", [0.5, -1.0, 2.0]),
    ("sentiment", [-3.0, 0.25, 1.0]),
    ("sentiment", [-2.0, 0.5, -1.0]),
    ("ner", [0.1, -0.3, 0.2]),
    ("ner+sentiment", [1.0, 1.0, -1.0]),
    ("ner", [0.2, 0.4, -0.6]),
]


def _run(optimizer_class, steps, param: torch.nn.Parameter, optimizer=None) -> tuple[list[list[float]], object]:
    optimizer = optimizer or optimizer_class([param], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    trajectory = []
    for key, grad in steps:
        if isinstance(optimizer, PerTaskAdamW):
            optimizer.task_key = key
        param.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
        trajectory.append(param.detach().tolist())
    return trajectory, optimizer


def test_each_task_steps_with_its_own_moments_and_step_count():
    start = [1.0, -2.0, 0.5]
    got, optimizer = _run(PerTaskAdamW, STEPS, torch.nn.Parameter(torch.tensor(start, dtype=torch.float64)))
    expected = _adamw_by_hand(start, STEPS)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-12, atol=1e-12)
    # One shared AdamW differs from the second step on: the sentiment step would move along ner's momentum.
    shared = _adamw_by_hand(start, [("all", grad) for _, grad in STEPS])
    assert abs(shared[1][0] - expected[1][0]) > 1e-3
    (state,) = optimizer.state.values()
    assert {key: int(entry["step"]) for key, entry in state.items()} == {"ner": 3, "sentiment": 2, "ner+sentiment": 1}


def test_with_one_key_it_is_torch_adamw_exactly():
    start = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    one_key = [("ner+sentiment", grad) for _, grad in STEPS]
    got, _ = _run(PerTaskAdamW, one_key, torch.nn.Parameter(start.clone()))
    expected, _ = _run(torch.optim.AdamW, one_key, torch.nn.Parameter(start.clone()))
    assert got == expected


def test_a_parameter_without_gradient_gets_no_state_for_that_task():
    encoder, head = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = PerTaskAdamW([encoder, head], lr=LR, weight_decay=0.0)
    for key, head_grad in (("sentiment", torch.ones(2)), ("ner", None)):
        optimizer.task_key = key
        encoder.grad, head.grad = torch.ones(2), head_grad
        optimizer.step()
    assert set(optimizer.state[encoder]) == {"sentiment", "ner"}
    assert set(optimizer.state[head]) == {"sentiment"}
    assert head.tolist() == pytest.approx([1 - LR] * 2)  # moved once (by lr, the first step of Adam), not twice


def test_state_dict_round_trip_and_copy_continue_the_same_trajectory():
    start = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    whole, _ = _run(PerTaskAdamW, STEPS, torch.nn.Parameter(start.clone()))
    param = torch.nn.Parameter(start.clone())
    _, first = _run(PerTaskAdamW, STEPS[:3], param)
    saved = copy.deepcopy(first.state_dict())
    resumed = PerTaskAdamW([param], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    resumed.load_state_dict(saved)
    rest, _ = _run(PerTaskAdamW, STEPS[3:], param, optimizer=resumed)
    assert rest == whole[3:]
    # A deep copy (as pickling does) keeps the per-task moments and their use.
    param_copy = torch.nn.Parameter(start.clone())
    _, original = _run(PerTaskAdamW, STEPS[:3], param_copy)
    copied = copy.deepcopy(original)
    (copied_param,) = copied.param_groups[0]["params"]
    _run(PerTaskAdamW, STEPS[3:], copied_param, optimizer=copied)
    assert copied_param.tolist() == whole[-1]


def _tiny_model() -> MultiTaskModel:
    encoder = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    return MultiTaskModel(MultiTaskConfig(encoder=encoder))


def test_through_the_trainer_each_step_uses_the_moments_of_the_task_it_trains(tmp_path):
    # 12 sentiment rows and 8 NER rows, batches of 4, per-task batches, one epoch: 3 sentiment and 2 NER steps.
    rows = [{"input_ids": [2, 4, 4, 3], "sentiment_labels": i % 2, "ner_labels": [-100] * 4} for i in range(12)]
    rows += [{"input_ids": [2, 4, 3], "sentiment_labels": -100, "ner_labels": [-100, 1, -100]} for _ in range(8)]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])})
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, per_task_optimizer_state=True, report_to="none",
        num_train_epochs=1, save_strategy="no", disable_tqdm=True, batch_composition="per_task",
    )  # fmt: skip
    model = _tiny_model()
    trainer = MultiTaskTrainer(model, args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    assert trainer.train().global_step == 5
    optimizer = trainer.optimizer.optimizer
    assert isinstance(optimizer, PerTaskAdamW)

    def steps(param):
        return {key: int(entry["step"]) for key, entry in optimizer.state[param].items()}

    assert steps(model.encoder.embeddings.word_embeddings.weight) == {"sentiment": 3, "ner": 2}
    assert all(steps(p) == {"sentiment": 3} for p in model.heads["sentiment"].parameters())
    assert all(steps(p) == {"ner": 2} for p in model.heads["ner"].parameters())
    # The learning-rate schedule stays shared: one group list, decayed over all 5 steps.
    assert trainer.lr_scheduler.last_epoch == 5


def test_a_step_that_raises_leaves_the_per_task_state_whole():
    start = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    whole, _ = _run(PerTaskAdamW, STEPS, torch.nn.Parameter(start.clone()))
    param = torch.nn.Parameter(start.clone())
    _, optimizer = _run(PerTaskAdamW, STEPS[:3], param)

    def interrupted() -> float:
        raise KeyboardInterrupt

    optimizer.task_key = "ner"
    with pytest.raises(KeyboardInterrupt):
        optimizer.step(interrupted)
    assert set(optimizer.state_dict()["state"][0]) == {"ner", "sentiment"}  # not AdamW's flat state
    rest, _ = _run(PerTaskAdamW, STEPS[3:], param, optimizer=optimizer)
    assert rest == whole[3:]


def test_a_plain_adamw_state_is_refused_with_one_line():
    param = torch.nn.Parameter(torch.ones(2))
    adamw = torch.optim.AdamW([param])
    param.grad = torch.ones(2)
    adamw.step()
    with pytest.raises(HfMtlError, match=r"^this optimizer state holds one set of AdamW moments, not one per task"):
        PerTaskAdamW([param]).load_state_dict(adamw.state_dict())


def _trainer(tmp_path, rows, **kwargs) -> MultiTaskTrainer:
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])})
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, per_task_optimizer_state=True, report_to="none",
        disable_tqdm=True, batch_composition="per_task", **kwargs,
    )  # fmt: skip
    torch.manual_seed(0)
    return MultiTaskTrainer(_tiny_model(), args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)


def test_resuming_a_checkpoint_gives_the_uninterrupted_run(tmp_path):
    rows = [{"input_ids": [2, 4, 4, 3], "sentiment_labels": i % 2, "ner_labels": [-100] * 4} for i in range(12)]
    rows += [{"input_ids": [2, 4, 3], "sentiment_labels": -100, "ner_labels": [-100, i % 3, -100]} for i in range(12)]
    options = {"max_steps": 6, "save_strategy": "steps", "save_steps": 3}
    whole = _trainer(tmp_path / "whole", rows, **options)
    whole.train()
    resumed = _trainer(tmp_path / "resumed", rows, **options)
    resumed.train()
    interrupted = _trainer(tmp_path / "resumed", rows, **options)
    interrupted.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-3"))
    assert isinstance(interrupted.optimizer.optimizer, PerTaskAdamW)
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(interrupted.model.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_refused_without_per_task_batches_with_another_optimizer_or_beside_one(tmp_path):
    with pytest.raises(HfMtlError, match=r"^--per_task_optimizer_state .* use --batch_composition per_task$"):
        MultiTaskTrainingArguments(
            output_dir="unused", per_task_optimizer_state=True, batch_composition="mixed", report_to="none"
        )
    message = r"^--per_task_optimizer_state .* needs --optim adamw_torch .* got --optim sgd$"
    with pytest.raises(HfMtlError, match=message):
        MultiTaskTrainingArguments(output_dir="unused", per_task_optimizer_state=True, optim="sgd", report_to="none")
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), per_task_optimizer_state=True, report_to="none")
    model = _tiny_model()
    with pytest.raises(HfMtlError, match=r"^--per_task_optimizer_state builds hf_mtl.PerTaskAdamW itself"):
        MultiTaskTrainer(model, args, optimizers=(torch.optim.SGD(model.parameters(), lr=0.1), None))
