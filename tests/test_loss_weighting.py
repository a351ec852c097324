"""Loss weighting strategies against hand-computed cases, and in the Trainer."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from hf_mtl import HfMtlError, MultiTaskConfig, MultiTaskModel, MultiTaskTrainer, parse_tasks, tokenize_and_align
from hf_mtl.arguments import MultiTaskTrainingArguments
from hf_mtl.data.sources import DEMO_DATASET, load_source, parse_sources
from hf_mtl.loss_weighting import dwa_weights, mean_pairwise_cosine, pcgrad_project
from hf_mtl.metrics import best_per_task
from run_mtl import main

ROOT = Path(__file__).resolve().parents[1]
TASKS = parse_tasks(None)


def test_dwa_weights_from_a_known_history():
    history = [{"sentiment": 1.0, "ner": 2.0}, {"sentiment": 0.5, "ner": 2.0}]
    weights = dwa_weights(history, ["sentiment", "ner"], temperature=2.0)
    e_s, e_n = math.exp(0.5 / 2), math.exp(1.0 / 2)
    assert weights["sentiment"] == pytest.approx(2 * e_s / (e_s + e_n))
    assert weights["ner"] == pytest.approx(2 * e_n / (e_s + e_n))
    assert sum(weights.values()) == pytest.approx(2.0)
    assert dwa_weights(history[:1], ["sentiment", "ner"]) == {"sentiment": 1.0, "ner": 1.0}
    # The task whose loss fell faster gets the smaller weight.
    assert weights["sentiment"] < weights["ner"]


def test_pcgrad_removes_only_the_conflicting_component():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    p1, p2 = pcgrad_project([g1, g2])
    torch.testing.assert_close(p1, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(p2, torch.tensor([0.0, 1.0]))
    assert torch.dot(p1, g2) >= -1e-7 and torch.dot(p2, g1) >= -1e-7
    aligned = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])]
    for before, after in zip(aligned, pcgrad_project(aligned)):
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert mean_pairwise_cosine(aligned) == pytest.approx(1 / math.sqrt(2))


def test_pcgrad_three_tasks_random_order_ends_non_conflicting():
    generator = torch.Generator().manual_seed(0)
    gradients = [torch.randn(50, generator=generator) for _ in range(3)]
    projected = pcgrad_project(gradients, torch.Generator().manual_seed(1))
    assert all(torch.isfinite(p).all() for p in projected)
    for i in range(3):  # with two others, the last projection leaves g_i' . g_j >= 0 for that j at least
        assert any(torch.dot(projected[i], gradients[j]) >= -1e-5 for j in range(3) if j != i)


def test_uncertainty_weighting_formula_and_saved_log_variances(tiny_dir, tokenizer, tmp_path):
    model = MultiTaskModel.from_encoder(str(tiny_dir), loss_weighting="uncertainty")
    with torch.no_grad():
        model.log_variances.copy_(torch.tensor([0.5, -0.3]))
    batch = tokenizer(["anna loved paris", "bad food"], padding=True, return_tensors="pt")
    ner = torch.full_like(batch["input_ids"], -100)
    ner[0, 1] = 1
    out = model(**batch, sentiment_labels=torch.tensor([1, 0]), ner_labels=ner)
    expected = math.exp(-0.5) * out.task_losses["sentiment"] + 0.5 + math.exp(0.3) * out.task_losses["ner"] - 0.3
    torch.testing.assert_close(out.loss, expected)
    no_ner = model(**batch, sentiment_labels=torch.tensor([1, 0]), ner_labels=torch.full_like(ner, -100))
    torch.testing.assert_close(no_ner.loss, math.exp(-0.5) * no_ner.task_losses["sentiment"] + 0.5)
    assert model.task_weights() == pytest.approx({"sentiment": math.exp(-0.5), "ner": math.exp(0.3)})
    model.save_pretrained(tmp_path)
    reloaded = MultiTaskModel.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.log_variances, torch.tensor([0.5, -0.3]))


@pytest.fixture(scope="module")
def demo(tokenizer):
    loaded = load_source(parse_sources([{"name": "demo", "dataset_name": DEMO_DATASET}], TASKS)[0], TASKS)
    return tokenize_and_align(loaded.splits["train"].select(range(64)), tokenizer, TASKS)


def _train(tiny_dir, tokenizer, demo, tmp_path, strategy, **extra):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(
        str(tiny_dir), loss_weighting="uncertainty" if strategy == "uncertainty" else "static"
    )
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=6,
        logging_steps=2,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        loss_weighting=strategy,
        **extra,
    )
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=demo, processing_class=tokenizer)
    trainer.train()
    return trainer, [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("strategy", ["static", "uncertainty", "dwa", "pcgrad"])
def test_each_strategy_trains_and_logs_task_weights(tiny_dir, tokenizer, demo, tmp_path, strategy):
    trainer, logs = _train(tiny_dir, tokenizer, demo, tmp_path, strategy, log_grad_cosine=True)
    assert len(logs) == 3
    for entry in logs:
        assert {"sentiment_loss", "ner_loss", "weight_sentiment", "weight_ner", "grad_cosine"} <= set(entry)
        assert all(math.isfinite(entry[key]) for key in ("loss", "weight_sentiment", "weight_ner", "grad_cosine"))
        assert -1 <= entry["grad_cosine"] <= 1
    if strategy == "static" or strategy == "pcgrad":
        assert all(entry["weight_sentiment"] == 1.0 for entry in logs)
    if strategy == "uncertainty":
        assert logs[-1]["weight_sentiment"] != 1.0  # the log-variances were learned
    if strategy == "dwa":
        assert logs[0]["weight_ner"] == 1.0 and logs[1]["weight_ner"] == 1.0
        expected = dwa_weights(
            [{t: logs[i][f"{t}_loss"] for t in ("sentiment", "ner")} for i in (0, 1)], ["sentiment", "ner"], 2.0
        )
        assert logs[2]["weight_ner"] == pytest.approx(expected["ner"])


def _flat(gradients, parameters):
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gradients, parameters)]
    )


def test_pcgrad_training_step_matches_a_projection_by_hand(tiny_dir, tokenizer, tmp_path):
    # A sentence task "seq" (reading the [CLS] state) and a token task "tok" with the same three labels, whose heads
    # are made identical. At [CLS], "seq" wants label 0 and "tok" label 1: the same logits pulled towards different
    # classes, so the two gradients on the encoder conflict; "tok" also labels a word per row, so they are not
    # simply opposite. Weights 1 and 0.5 check that each task's gradient is that of weight * loss.
    tags = ["O", "B-X", "I-X"]
    tasks = [
        {"name": "seq", "kind": "sequence_classification", "labels": tags, "weight": 1.0},
        {"name": "tok", "kind": "token_classification", "labels": tags, "weight": 0.5},
    ]
    encoder_config = BertConfig.from_pretrained(tiny_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    # "cls" pooling: the heads read the [CLS] state, so no task reaches the encoder's pooler.
    config = MultiTaskConfig(encoder=encoder_config, tasks=tasks, classifier_dropout=0.0, sentence_pooling="cls")
    torch.manual_seed(0)
    model = MultiTaskModel(config)  # new heads; the tiny encoder's weights loaded below
    model.encoder.load_state_dict(BertModel.from_pretrained(tiny_dir).state_dict())
    with torch.no_grad():
        model.heads["tok"].classifier.weight.copy_(model.heads["seq"].classifier.weight)
        model.heads["tok"].classifier.bias.copy_(model.heads["seq"].classifier.bias)
    batch = dict(tokenizer(["anna loved the food in paris", "bad trip"], padding=True, return_tensors="pt"))
    batch["seq_labels"] = torch.tensor([0, 0])
    batch["tok_labels"] = torch.full_like(batch["input_ids"], -100)
    batch["tok_labels"][:, 0] = 1  # [CLS]
    batch["tok_labels"][0, 1], batch["tok_labels"][1, 1] = 0, 2

    # Independently of the trainer: each task's gradient on the encoder, projected by hand, summed.
    model.train()  # as training_step does; every dropout probability is 0, so this is deterministic
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    heads = [p for p in model.heads.parameters()]
    out = model(**batch)
    g1, g2 = (
        _flat(torch.autograd.grad(w * out.task_losses[t], encoder, retain_graph=True, allow_unused=True), encoder)
        for t, w in (("seq", 1.0), ("tok", 0.5))
    )
    dot = torch.dot(g1, g2)
    assert dot < 0  # the gradients conflict
    assert dot > -0.9 * g1.norm() * g2.norm()  # but are not anti-parallel (which would project both to 0)
    p1 = g1 - dot / g2.dot(g2) * g2  # g1 onto g2's normal plane
    p2 = g2 - dot / g1.dot(g1) * g1  # g2 onto g1's normal plane
    expected_encoder = p1 + p2
    assert torch.dot(p1, g2).abs() < 1e-6 * g1.norm() * g2.norm()
    assert not torch.allclose(expected_encoder, g1 + g2)  # the projection changes the sum
    expected_heads = torch.autograd.grad(out.loss, heads)  # the plain gradient of 1 * L_seq + 0.5 * L_tok
    torch.testing.assert_close(out.loss, out.task_losses["seq"] + 0.5 * out.task_losses["tok"])

    args = MultiTaskTrainingArguments(
        str(tmp_path), report_to="none", loss_weighting="pcgrad", bf16=False, gradient_accumulation_steps=1
    )
    trainer = MultiTaskTrainer(model=model, args=args, processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this test bypasses: no 1/k
    model.zero_grad(set_to_none=True)
    loss = trainer.training_step(model, dict(batch))
    torch.testing.assert_close(loss, out.loss.detach(), rtol=1e-6, atol=1e-7)

    names = {id(p): name for name, p in model.named_parameters()}
    pooler = [p for name, p in model.encoder.named_parameters() if name.startswith("pooler.")]
    assert pooler and all(p.grad is None for p in pooler)  # reached by no task: no gradient at all
    reached = [p for p in encoder if all(p is not q for q in pooler)]
    assert all(p.grad is not None for p in reached)
    torch.testing.assert_close(_flat([p.grad for p in encoder], encoder), expected_encoder, rtol=1e-5, atol=1e-7)
    for parameter, expected in zip(heads, expected_heads):
        torch.testing.assert_close(parameter.grad, expected, rtol=1e-5, atol=1e-7, msg=names[id(parameter)])


def test_uncertainty_needs_a_matching_model(tiny_dir, tokenizer, tmp_path):
    args = MultiTaskTrainingArguments(str(tmp_path), report_to="none", loss_weighting="uncertainty")
    with pytest.raises(HfMtlError, match="uncertainty weighting needs"):
        MultiTaskTrainer(model=MultiTaskModel.from_encoder(str(tiny_dir)), args=args, processing_class=tokenizer)


def test_best_per_task_and_early_stopping(tiny_dir, tmp_path):
    history = [
        {"eval_sentiment_accuracy": 0.6, "eval_ner_f1": 0.2, "step": 10},
        {"eval_sentiment_accuracy": 0.8, "eval_ner_f1": 0.1, "step": 20},
        {"eval_sentiment_accuracy": 0.8, "eval_ner_f1": 0.3, "step": 30},
    ]
    best = best_per_task(history, TASKS)
    assert best["sentiment"]["step"] == 20 and best["ner"]["step"] == 30 and best["ner"]["value"] == 0.3
    output_dir = tmp_path / "early"
    metrics = main(
        [
            "configs/demo.yaml",
            "--model_name_or_path",
            str(tiny_dir),
            "--output_dir",
            str(output_dir),
            "--max_steps",
            "10",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "1",
            "--learning_rate",
            "1e-12",
            "--early_stopping_patience",
            "1",
            "--do_predict",
            "false",
            "--disable_tqdm",
            "true",
        ]
    )
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 2  # no improvement after the first evaluation: stopped at the second
    assert json.loads((output_dir / "best_per_task.json").read_text())["sentiment"]["step"] == 1
    assert "Best checkpoint per task" in (output_dir / "README.md").read_text() and "eval_combined_score" in metrics
    with pytest.raises(HfMtlError, match="--early_stopping_patience needs evaluations"):
        main(
            [
                "configs/demo.yaml",
                "--output_dir",
                str(tmp_path / "x"),
                "--eval_strategy",
                "no",
                "--early_stopping_patience",
                "2",
            ]
        )


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["uncertainty", "pcgrad"])
def test_two_processes_log_the_same_keys(tiny_dir, tmp_path, strategy):
    common = [
        "configs/demo.yaml",
        "--model_name_or_path",
        str(tiny_dir),
        "--max_steps",
        "4",
        "--logging_steps",
        "2",
        "--loss_weighting",
        strategy,
        "--log_grad_cosine",
        "--do_predict",
        "false",
        "--eval_strategy",
        "no",
        "--disable_tqdm",
        "true",
    ]
    keys = {}
    for name, launcher in (
        ("single", [sys.executable]),
        ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]),
    ):
        result = subprocess.run(
            [*launcher, str(ROOT / "run_mtl.py"), *common, "--output_dir", str(tmp_path / name)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        history = json.loads((tmp_path / name / "trainer_state.json").read_text())["log_history"]
        keys[name] = set().union(*[entry for entry in history if "loss" in entry])
    assert keys["single"] == keys["ddp"]
    assert {"weight_sentiment", "weight_ner", "grad_cosine", "sentiment_loss", "ner_loss"} <= keys["ddp"]
