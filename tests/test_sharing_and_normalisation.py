"""Per-optimizer-step loss normalisation, task-specific top layers (partial sharing) and the heads' learning rate,
each against an independent computation."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from torch.nn import functional as F
from transformers import AlbertConfig, BertConfig, BertModel, BertTokenizerFast

from hf_mtl import MultiTaskConfig, MultiTaskModel, MultiTaskTrainer
from hf_mtl.arguments import MultiTaskTrainingArguments, parse_args
from hf_mtl.data.collator import MultiTaskDataCollator, sorted_micro_batches
from hf_mtl.data.sampling import (
    ShuffledLengthGroupedSampler,
    TaskHomogeneousBatchSampler,
    TaskHomogeneousSampler,
    column_values,
    equal_length_batches,
    split_by_task,
    task_groups,
    training_epochs,
    training_sampler,
)
from hf_mtl.errors import HfMtlError
from hf_mtl.loss_weighting import balance_weights

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _rows(tokenizer) -> list[dict]:
    """Four rows whose labelled positions differ a lot per task: the pooled and the per-batch means differ."""
    texts = ["anna visited paris", "a dull film", "the film was good and anna liked it", "paris"]
    sentiment = [1, -100, 0, -100]
    rows = []
    for text, label in zip(texts, sentiment):
        ids = tokenizer(text)["input_ids"]
        ner = [-100] * len(ids)
        if text.startswith("anna"):
            ner[1:4] = [1, 0, 3]
        if text == "paris":
            ner[1] = 3
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "sentiment_labels": label, "ner_labels": ner})
    return rows


def _pooled_loss(model: MultiTaskModel, rows: list[dict], tokenizer, denominators: dict | None = None) -> torch.Tensor:
    """Σ_t w_t (Σ cross-entropy over the step's labelled positions of t) / (their number, or `denominators[t]`),
    from the logits."""
    batch = tokenizer.pad([{k: r[k] for k in ("input_ids", "attention_mask")} for r in rows], return_tensors="pt")
    width = batch["input_ids"].shape[1]
    ner = torch.tensor([r["ner_labels"] + [-100] * (width - len(r["ner_labels"])) for r in rows])
    sentiment = torch.tensor([r["sentiment_labels"] for r in rows])
    logits = model(**batch).logits
    total = 0.0
    for name, labels in (("sentiment", sentiment), ("ner", ner)):
        flat = logits[name].reshape(-1, logits[name].shape[-1])
        denominator = (labels != -100).sum() if denominators is None else denominators[name]
        total = total + F.cross_entropy(flat, labels.reshape(-1), ignore_index=-100, reduction="sum") / denominator
    return total


def _pooled_gradients(model: MultiTaskModel, rows: list[dict], tokenizer, denominators: dict | None = None):
    """The loss of `_pooled_loss` and the gradients it gives, computed independently of the Trainer; the model's
    gradients are left at zero."""
    model.zero_grad()
    loss = _pooled_loss(model, rows, tokenizer, denominators)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.detach(), grads


def _first_step_with_accumulation_2(model, dataset: Dataset, tokenizer, tmp_path, **kwargs):
    """A Trainer over `dataset` in order (batch 2, accumulation 2): the first optimizer step's micro-batches and
    `num_items_in_batch`."""
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        train_sampling_strategy="sequential",
        batch_composition="mixed",
        report_to="none",
        **kwargs,
    )
    trainer = MultiTaskTrainer(model, args, train_dataset=dataset, processing_class=tokenizer)
    micro_batches, num_items = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 2, args.device)
    return trainer, micro_batches, num_items


def _assert_step_gives(trainer, model, micro_batches, num_items, expected_loss, expected_grads) -> None:
    step_loss = sum(trainer.training_step(model, batch, num_items) for batch in micro_batches)
    torch.testing.assert_close(step_loss, expected_loss)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, msg=name)


def test_gradient_accumulation_gives_the_loss_and_gradient_of_the_pooled_batch(tiny_dir, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(str(tiny_dir), encoder_kwargs=NO_DROPOUT, classifier_dropout=0.0)
    rows = _rows(tokenizer)
    # Independently: one pooled batch of the 4 rows.
    expected_loss, expected_grads = _pooled_gradients(model, rows, tokenizer)
    trainer, micro_batches, num_items = _first_step_with_accumulation_2(
        model, Dataset.from_list(rows), tokenizer, tmp_path
    )
    # Sentiment labels rows 0 and 2; NER labels 3 tokens of row 0 and 1 of row 3: counted over the whole step.
    assert {task: int(count) for task, count in num_items.items()} == {"sentiment": 2, "ner": 4}
    _assert_step_gives(trainer, model, micro_batches, num_items, expected_loss, expected_grads)
    # Averaging each micro-batch's means would not: the first micro-batch holds 3 of the 4 NER positions.
    with torch.no_grad():
        per_batch_means = sum(model(**batch).loss for batch in micro_batches) / 2
    assert abs(per_batch_means.item() - expected_loss.item()) > 1e-2


def test_sorted_micro_batches_give_the_loss_and_gradient_of_the_whole_batch(tiny_dir, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(str(tiny_dir), encoder_kwargs=NO_DROPOUT, classifier_dropout=0.0)
    rows = _rows(tokenizer)
    expected_loss, expected_grads = _pooled_gradients(model, rows, tokenizer)
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, train_sampling_strategy="sequential",
        batch_composition="mixed", sorted_micro_batches=2, report_to="none",
    )  # fmt: skip
    trainer = MultiTaskTrainer(model, args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    (batch,), num_items = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 1, args.device)
    # The parts: rows longest first (a stable sort by length), two per part, each as wide as its longest row.
    lengths = [len(row["input_ids"]) for row in rows]
    order = sorted(range(4), key=lambda i: -lengths[i])
    halves = [order[:2], order[2:]]
    widths = [max(lengths[i] for i in half) for half in halves]
    assert widths[1] < widths[0] == batch["input_ids"].shape[1]  # the second part needs less padding
    parts = sorted_micro_batches(batch, 2, ["input_ids", "attention_mask", "token_type_ids", "ner_labels"])
    assert [tuple(part["input_ids"].shape) for part in parts] == [(2, widths[0]), (2, widths[1])]
    for part, order in zip(parts, halves):
        width = part["input_ids"].shape[1]
        assert part["input_ids"].tolist() == [batch["input_ids"][i, :width].tolist() for i in order]
        assert part["ner_labels"].tolist() == [batch["ner_labels"][i, :width].tolist() for i in order]
        assert part["sentiment_labels"].tolist() == [rows[i]["sentiment_labels"] for i in order]
    # The step runs the parts one after the other and gives the whole batch's loss and gradient (computed
    # independently above).
    seen, compute_loss = [], trainer.compute_loss

    def recording(model, inputs, **kwargs):
        seen.append(tuple(inputs["input_ids"].shape))
        return compute_loss(model, inputs, **kwargs)

    trainer.compute_loss = recording
    step_loss = trainer.training_step(model, batch, num_items)
    assert seen == [(2, widths[0]), (2, widths[1])]
    torch.testing.assert_close(step_loss, expected_loss)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, msg=name)
    model.zero_grad()
    # Each part's own mean would not give it: the parts hold different shares of the labelled positions.
    with torch.no_grad():
        per_part_means = sum(model(**part).loss for part in parts) / 2
    assert abs(per_part_means.item() - expected_loss.item()) > 1e-2

    # Left padding is not cut; the options that read a whole batch's per-task gradients refuse it.
    left = {**batch, "attention_mask": batch["attention_mask"].flip(1)}
    assert [p["input_ids"].shape[1] for p in sorted_micro_batches(left, 2, ["input_ids"])] == [widths[0]] * 2
    with pytest.raises(HfMtlError, match="--sorted_micro_batches 2: --loss_weighting pcgrad reads a whole batch"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), sorted_micro_batches=2, loss_weighting="pcgrad")
    with pytest.raises(HfMtlError, match="--sorted_micro_batches must be at least 1, got 0"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), sorted_micro_batches=0)
    # The default: 2 on the CPU, 1 where the per-task gradients need whole batches.
    assert MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True).sorted_micro_batches == 2
    for needs_whole_batches in ({"loss_weighting": "pcgrad"}, {"loss_weighting": "grad_balance"},
                                {"log_grad_cosine": True, "batch_composition": "mixed"}):  # fmt: skip
        args = MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, **needs_whole_batches)
        assert args.sorted_micro_batches == 1, needs_whole_batches


def test_expected_loss_denominator_weighs_every_token_the_same_in_every_step(tiny_dir, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(str(tiny_dir), encoder_kwargs=NO_DROPOUT, classifier_dropout=0.0)
    rows = _rows(tokenizer)
    # A fifth row, not in the first step, with 5 labelled words: NER labels 3 + 1 + 5 words in 3 rows, 3.0 per row.
    ids = tokenizer("anna and paris and anna met")["input_ids"]
    extra = {"input_ids": ids, "attention_mask": [1] * len(ids), "sentiment_labels": -100}
    extra["ner_labels"] = [-100] + [1, 0, 3, 0, 1] + [-100] * (len(ids) - 6)
    # Independently: the first step's 4 rows, each task's summed cross-entropy over (its rows there) x (per row).
    expected_loss, expected_grads = _pooled_gradients(model, rows, tokenizer, {"sentiment": 2 * 1.0, "ner": 2 * 3.0})
    dataset = Dataset.from_list([*rows, extra])
    trainer, micro_batches, num_items = _first_step_with_accumulation_2(
        model, dataset, tokenizer, tmp_path, loss_denominator="expected"
    )
    assert {task: float(count) for task, count in num_items.items()} == {"sentiment": 2.0, "ner": 6.0}
    _assert_step_gives(trainer, model, micro_batches, num_items, expected_loss, expected_grads)
    # Evaluation counts the labelled positions whatever the training rule: NER labels 3 + 1 words of the first step.
    model.eval()
    assert {task: int(count) for task, count in trainer._get_num_items_in_batch(micro_batches, "cpu").items()} == {
        "sentiment": 2,
        "ner": 4,
    }
    with pytest.raises(HfMtlError, match="--loss_denominator must be 'labelled' or 'expected', got 'tokens'"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), loss_denominator="tokens")
    stream_args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, batch_composition="mixed", loss_denominator="expected", report_to="none"
    )
    with pytest.raises(HfMtlError, match="--loss_denominator expected needs a map-style training set"):
        MultiTaskTrainer(model, stream_args, train_dataset=dataset.to_iterable_dataset(), processing_class=tokenizer)


def test_default_loss_denominator_is_expected_only_for_length_grouped_token_batches(tiny_dir, tokenizer, tmp_path):
    model = MultiTaskModel.from_encoder(str(tiny_dir))
    rows = _rows(tokenizer)
    ids = tokenizer("anna and paris and anna met")["input_ids"]
    extra = {"input_ids": ids, "attention_mask": [1] * len(ids), "sentiment_labels": -100}
    extra["ner_labels"] = [-100] + [1, 0, 3, 0, 1] + [-100] * (len(ids) - 6)
    dataset = Dataset.from_list([*rows, extra])  # NER labels 3 + 1 + 5 words in 3 rows: 3.0 per row

    def trainer_for(train_dataset=dataset, **kwargs) -> MultiTaskTrainer:
        args = MultiTaskTrainingArguments(
            output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2, report_to="none", **kwargs
        )
        return MultiTaskTrainer(model, args, train_dataset=train_dataset, processing_class=tokenizer)

    # Length-grouped token batches (per-task batches of a map-style set): the expected positions.
    trainer = trainer_for(length_group_token_tasks=True)
    assert trainer.args.loss_denominator is None and trainer.loss_denominator == "expected"
    model.train()
    ner_positions = []  # each NER batch's labelled positions, which the default does not divide by
    for batch in trainer.get_train_dataloader():
        num_items = trainer._get_num_items_in_batch([batch], "cpu")
        ner_rows = int((batch["ner_labels"] != -100).any(dim=1).sum())
        if ner_rows:
            ner_positions.append((int((batch["ner_labels"] != -100).sum()), 3.0 * ner_rows))
        sentiment_rows = int((batch["sentiment_labels"] != -100).sum())
        assert {task: float(count) for task, count in num_items.items()} == {
            "sentiment": 1.0 * sentiment_rows,
            "ner": 3.0 * ner_rows,
        }
    assert any(positions != expected for positions, expected in ner_positions), ner_positions
    # The defaults (random token batches), random batches, token batches cut by words, a stream, or asked for: the
    # labelled positions.
    assert trainer_for().args.length_group_token_tasks is False
    for kwargs in (
        {},
        {"train_sampling_strategy": "random", "length_group_token_tasks": True},
        {"token_batches_by_words": True, "length_group_token_tasks": True},
        {"train_dataset": dataset.to_iterable_dataset(), "length_group_token_tasks": True},
        {"loss_denominator": "labelled", "length_group_token_tasks": True},
    ):
        assert trainer_for(**kwargs).loss_denominator == "labelled", kwargs


def _tiny_config(**kwargs) -> MultiTaskConfig:
    encoder = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37, **NO_DROPOUT
    )
    return MultiTaskConfig(encoder=encoder, **kwargs)


def test_task_layers_compute_what_a_full_encoder_with_that_task_top_layer_computes(tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel(_tiny_config(task_specific_layers=1)).eval()
    assert len(model.encoder.encoder.layer) == 2 and {k: len(v) for k, v in model.task_layers.items()} == {
        "sentiment": 1,
        "ner": 1,
    }
    ids = torch.randint(5, 100, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    outputs = model(input_ids=ids, attention_mask=mask)
    full = BertModel(model.config.encoder).eval()
    for task in ("sentiment", "ner"):
        weights = dict(model.encoder.state_dict())
        weights.update({f"encoder.layer.2.{k[2:]}": v for k, v in model.task_layers[task].state_dict().items()})
        full.load_state_dict(weights)
        reference = full(input_ids=ids, attention_mask=mask)
        expected = model.heads[task](reference.last_hidden_state, reference.pooler_output)
        torch.testing.assert_close(outputs.logits[task], expected)
    # The copies are separate parameters, and a save / load round trip keeps them.
    assert model.task_layers["ner"][0].output.dense.weight is not model.task_layers["sentiment"][0].output.dense.weight
    model.save_pretrained(tmp_path)
    reloaded = MultiTaskModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.task_specific_layers == 1
    again = reloaded(input_ids=ids, attention_mask=mask)
    for task in ("sentiment", "ner"):
        torch.testing.assert_close(again.logits[task], outputs.logits[task])


def test_task_layers_start_from_the_pretrained_top_layers(tiny_dir):
    model = MultiTaskModel.from_encoder(str(tiny_dir), task_specific_layers=1)
    pretrained = BertModel.from_pretrained(tiny_dir).encoder.layer[1].state_dict()
    assert len(model.encoder.encoder.layer) == 1
    for task in ("sentiment", "ner"):
        for key, value in model.task_layers[task][0].state_dict().items():
            torch.testing.assert_close(value, pretrained[key], msg=f"{task}: {key}")


def test_a_training_batch_without_a_task_skips_its_layers_and_gives_it_no_gradient():
    torch.manual_seed(0)
    model = MultiTaskModel(_tiny_config(task_specific_layers=1)).train()
    ids = torch.randint(5, 100, (2, 6))
    outputs = model(input_ids=ids, sentiment_labels=torch.tensor([0, 1]), ner_labels=torch.full((2, 6), -100))
    assert set(outputs.logits) == {"sentiment"} and outputs.task_losses["ner"].item() == 0.0
    outputs.loss.backward()
    assert all(p.grad is None for p in model.task_layers["ner"].parameters())
    assert all(p.grad is not None for p in model.task_layers["sentiment"].parameters())


def test_task_layers_refuse_a_depth_that_leaves_nothing_shared_and_albert():
    with pytest.raises(HfMtlError, match="leaves no shared layer: the encoder has 3 layers"):
        MultiTaskModel(_tiny_config(task_specific_layers=3))
    with pytest.raises(HfMtlError, match="task_specific_layers must be an integer >= 0"):
        _tiny_config(task_specific_layers=-1)
    albert = AlbertConfig(
        vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2
    )
    with pytest.raises(HfMtlError, match="albert encoder has no list of layers"):
        MultiTaskModel(MultiTaskConfig(encoder=albert, task_specific_layers=1))


def test_head_learning_rate_puts_exactly_the_heads_in_their_own_groups(tmp_path):
    model = MultiTaskModel(_tiny_config())
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), learning_rate=1e-4, head_learning_rate=1e-3, weight_decay=0.01, report_to="none"
    )
    trainer = MultiTaskTrainer(model, args)
    optimizer = trainer.create_optimizer()
    heads = {id(p) for p in model.heads.parameters()}
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    assert by_lr[1e-3] == heads
    assert by_lr[1e-4] == {id(p) for p in model.parameters()} - heads
    # Weight decay stays as the Trainer sets it: on the heads' weights, not on their biases.
    decays = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decays[id(model.heads["ner"].classifier.weight)] == 0.01
    assert decays[id(model.heads["ner"].classifier.bias)] == 0.0
    # The Trainer's groups first, the heads' after them (the layout optimizer states were saved with); a second call
    # (a second `train()`) keeps it.
    layout = [(g["lr"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups]
    assert [(lr, decay) for lr, decay, _ in layout] == [(1e-4, 0.01), (1e-4, 0.0), (1e-3, 0.01), (1e-3, 0.0)]
    trainer.create_optimizer()
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in trainer.optimizer.param_groups] == layout
    with pytest.raises(HfMtlError, match="--head_learning_rate must be positive"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), head_learning_rate=0.0)


def _rates(optimizer) -> dict[int, float]:
    return {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}


@pytest.mark.parametrize("task_layers", [0, 1])
def test_layerwise_lr_decay_gives_each_layer_the_rate_of_the_layer_above_times_the_decay(tmp_path, task_layers):
    model = MultiTaskModel(_tiny_config(task_specific_layers=task_layers))
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=1e-3,
        layerwise_lr_decay=0.5,
        head_learning_rate=1e-2,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        report_to="none",
    )
    trainer = MultiTaskTrainer(model, args)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    rates = _rates(trainer.optimizer)
    # 3 layers in all: the top one (shared, or each task's copy) at 1e-3, then 5e-4, 2.5e-4, the embeddings 1.25e-4.
    shared = list(model.encoder.encoder.layer)
    stacks = [shared] + [shared + list(layers) for layers in model.task_layers.values()]
    expected = {}
    for stack in stacks:
        for layer, rate in zip(stack, [2.5e-4, 5e-4, 1e-3]):
            expected |= {id(p): rate for p in layer.parameters()}
    expected |= {id(p): 1.25e-4 for p in model.encoder.embeddings.parameters()}
    expected |= {id(p): 1e-3 for p in model.encoder.pooler.parameters()}
    expected |= {id(p): 1e-2 for p in model.heads.parameters()}
    assert len(expected) == len(list(model.parameters()))
    assert rates == pytest.approx(expected, rel=1e-12)
    decays = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert decays[id(shared[0].attention.self.query.weight)] == 0.01
    assert decays[id(shared[0].attention.self.query.bias)] == 0.0
    # The schedule scales every group alike: after 1 of 10 linear steps, each rate is 9/10 of its own.
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    assert _rates(trainer.optimizer) == pytest.approx({k: 0.9 * v for k, v in expected.items()}, rel=1e-12)


def test_layerwise_lr_decay_refuses_a_factor_outside_0_1_and_albert(tmp_path):
    for decay in (0.0, 1.5):
        with pytest.raises(HfMtlError, match=r"--layerwise_lr_decay must be in \(0, 1\], got"):
            MultiTaskTrainingArguments(output_dir=str(tmp_path), layerwise_lr_decay=decay)
    albert = AlbertConfig(
        vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2
    )
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), layerwise_lr_decay=0.8, report_to="none")
    trainer = MultiTaskTrainer(MultiTaskModel(MultiTaskConfig(encoder=albert)), args)
    with pytest.raises(HfMtlError, match="--layerwise_lr_decay: the albert encoder has no list of layers"):
        trainer.create_optimizer()


def test_head_hidden_layers_compute_dense_gelu_then_the_classifier_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel(_tiny_config(head_hidden_layers=2, classifier_dropout=0.0)).eval()
    for task in ("sentiment", "ner"):
        head = model.heads[task]
        assert [tuple(d.weight.shape) for d in head.dense] == [(32, 32), (32, 32)]
        # Initialised like the classifier: N(0, initializer_range), zero bias.
        assert all(torch.equal(d.bias, torch.zeros(32)) for d in head.dense)
        assert 0.015 < torch.cat([d.weight.flatten() for d in head.dense]).std().item() < 0.025
    ids = torch.randint(5, 100, (3, 7))
    outputs = model(input_ids=ids)
    encoded = model.encoder(input_ids=ids)
    for task, features in (("sentiment", encoded.pooler_output), ("ner", encoded.last_hidden_state)):
        head = model.heads[task]
        hidden = features
        for dense in head.dense:  # x W^T + b, then the exact GELU, by hand
            z = hidden @ dense.weight.T + dense.bias
            hidden = 0.5 * z * (1 + torch.erf(z / 2**0.5))
        expected = hidden @ head.classifier.weight.T + head.classifier.bias
        torch.testing.assert_close(outputs.logits[task], expected)
    model.save_pretrained(tmp_path)
    reloaded = MultiTaskModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.head_hidden_layers == 2
    for task in ("sentiment", "ner"):
        torch.testing.assert_close(reloaded(input_ids=ids).logits[task], outputs.logits[task])
    with pytest.raises(HfMtlError, match="head_hidden_layers must be an integer >= 0"):
        _tiny_config(head_hidden_layers=-1)


def test_default_heads_are_dropout_and_linear_as_bert_for_classification():
    model = MultiTaskModel(_tiny_config())
    assert all(len(head.dense) == 0 for head in model.heads.values())
    assert {name for name, _ in model.heads["ner"].named_parameters()} == {"classifier.weight", "classifier.bias"}


def test_task_groups_follow_which_tasks_a_row_labels():
    columns = {"sentiment_labels": [1, -100, 0, -100, 1], "ner_labels": [[-100], [0, 3], [1], [-100, -100], [-100]]}
    assert task_groups(columns) == [0, 1, 2, 3, 0]


def test_per_task_batches_hold_one_group_each_and_every_row(tmp_path):
    groups = [0] * 7 + [1] * 4 + [2]
    lengths = list(range(12))
    sampler = TaskHomogeneousSampler(groups, batch_size=3, lengths=lengths, generator=torch.Generator().manual_seed(0))
    order = list(sampler)
    assert len(order) == len(sampler) == 9 + 6 + 3  # each group filled up to whole batches
    batches = [order[i : i + 3] for i in range(0, len(order), 3)]
    assert all(len({groups[i] for i in batch}) == 1 for batch in batches)
    assert set(order) == set(range(12))
    assert sorted(groups[batch[0]] for batch in batches) == [0, 0, 0, 1, 1, 2]
    assert list(sampler) != order  # a new epoch, a new order

    # Through the Trainer: every DataLoader batch of a mixed two-corpus set labels one task only.
    rows = [{"input_ids": [2, 5 + i, 3], "sentiment_labels": i % 2, "ner_labels": [-100] * 3} for i in range(5)]
    rows += [{"input_ids": [2, 6, 7, 3], "sentiment_labels": -100, "ner_labels": [-100, 0, 1, -100]}] * 3
    model = MultiTaskModel(_tiny_config())
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, batch_composition="per_task", report_to="none"
    )
    tokenizer = BertTokenizerFast(
        vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + list("abcd"))}
    )
    trainer = MultiTaskTrainer(model, args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    for batch in trainer.get_train_dataloader():
        has_sentiment = bool((batch["sentiment_labels"] != -100).any())
        has_ner = bool((batch["ner_labels"] != -100).any())
        assert has_sentiment != has_ner


def test_length_group_task_flags_draw_that_kind_of_tasks_batches_at_random_and_the_others_by_length(tmp_path):
    # Rows 0-63 a sentence task, 64-127 a token task; in each, half the rows have length 5 and half length 50. Batches
    # of 4, megabatches of 4 batches (16 rows sorted by length): at most one batch per megabatch mixes both lengths.
    groups, lengths = [0] * 64 + [1] * 64, [5, 50] * 64
    generator = torch.Generator().manual_seed(0)
    sampler = TaskHomogeneousSampler(groups, 4, lengths, generator, megabatch_batches=4, random_groups={1})
    order = list(sampler)
    mixed = {0: 0, 1: 0}
    for batch in (order[i : i + 4] for i in range(0, len(order), 4)):
        mixed[groups[batch[0]]] += len({lengths[i] for i in batch}) == 2
    assert mixed[0] <= 4  # length-grouped: 4 megabatches, at most one mixed batch each
    assert mixed[1] > 8  # random rows: most of the 16 batches mix (14.2 expected)

    # Through the arguments: the group labelling the token task (group 1) is drawn at random under
    # --length_group_token_tasks false, the sentence one (group 0) under --length_group_sentence_tasks false.
    rows = [
        {"input_ids": [2] * (3 + i % 5), "sentiment_labels": i % 2, "ner_labels": [-100] * (3 + i % 5)}
        for i in range(8)
    ]
    rows += [
        {"input_ids": [2] * (3 + i % 5), "sentiment_labels": -100, "ner_labels": [0] * (3 + i % 5)} for i in range(8)
    ]
    dataset = Dataset.from_list(rows)
    dataset = dataset.add_column("length", [len(row["input_ids"]) for row in rows])
    for token_setting, sentence_setting, expected in (
        (True, True, set()),
        (False, True, {1}),
        (True, False, {0}),
        (False, False, {0, 1}),
    ):
        args = MultiTaskTrainingArguments(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            length_group_token_tasks=token_setting,
            length_group_sentence_tasks=sentence_setting,
            report_to="none",
        )
        sampler = training_sampler(dataset, args, ["sentiment_labels", "ner_labels"])
        assert sampler.random_groups == expected


def test_equal_length_batches_cut_rows_in_order_at_the_running_sum_nearest_each_share():
    # 2 x 40 + 8 x 10 = 160 words in 2 batches: 80 each, 2 rows and 8 rows (by rows: 5 and 5, 110 and 50 words).
    assert equal_length_batches([40, 40] + [10] * 8, 2) == [[0, 1], list(range(2, 10))]
    # 4 x 30 + 8 x 10 = 200 in 3: shares 66.7 and 133.3; the nearest running sums are 60 and 130 -> 60, 70, 70.
    assert equal_length_batches([30] * 4 + [10] * 8, 3) == [[0, 1], [2, 3, 4], list(range(5, 12))]
    # Every batch keeps at least one row, and never more batches than rows.
    assert equal_length_batches([10, 1, 1, 1], 2) == [[0], [1, 2, 3]]
    assert equal_length_batches([100, 1, 1, 1], 4) == [[0], [1], [2], [3]]
    assert equal_length_batches([5, 4], 3) == [[0], [1]]
    assert equal_length_batches([], 2) == []


def test_token_batches_by_words_give_token_steps_equal_words_and_sentence_steps_equal_rows(tmp_path, monkeypatch):
    # Rows 0-63 a sentence task, 64-127 a token task, lengths 5 and 50 alternating; batches of 4, megabatches of 4.
    groups, lengths = [0] * 64 + [1] * 64, [5, 50] * 64
    sampler = TaskHomogeneousSampler(
        groups, 4, lengths, torch.Generator().manual_seed(0), megabatch_batches=4, equal_word_groups={1}
    )
    batches = TaskHomogeneousBatchSampler(sampler)
    epoch = list(batches)
    assert len(epoch) == len(batches) == 32  # as many batches as by rows: 16 per task
    token = [batch for batch in epoch if groups[batch[0]] == 1]
    sentence = [batch for batch in epoch if groups[batch[0]] == 0]
    assert all(groups[i] == groups[batch[0]] for batch in epoch for i in batch)
    assert sorted(i for batch in token for i in batch) == list(range(64, 128))  # every row once
    assert sorted(i for batch in sentence for i in batch) == list(range(64))
    assert {len(batch) for batch in sentence} == {4}
    assert max(len(batch) for batch in token) > 4  # short rows fill bigger batches
    # One megabatch holding all 16 rows of a group (set after the constructor's limit for small sets): whatever the
    # permutation, 8 rows of 50 then 8 of 5 (440 tokens), cut where the running sum (50, 100, ..., 400, 405, ...) is
    # nearest 110, 220 and 330: after 100, 200 and 350 tokens.
    inner = ShuffledLengthGroupedSampler([5, 50] * 8, 4, generator=torch.Generator().manual_seed(1))
    inner.megabatch_batches = 4
    cut = inner.batches(equal_words=True)
    assert sorted(len(batch) for batch in cut) == [2, 2, 3, 9]
    assert sorted(sum([5, 50][i % 2] for i in batch) for batch in cut) == [90, 100, 100, 150]
    assert sorted(len(batch) for batch in inner.batches()) == [4, 4, 4, 4]  # by rows: 200, 200, 20 and 20 tokens

    # Through the arguments and the Trainer: the token group is cut by words, and the DataLoader yields the
    # sampler's batches as they come (recorded here), one optimizer step each.
    rows = [{"input_ids": [2] * (3 + i % 5), "sentiment_labels": i % 2, "ner_labels": [-100] * (3 + i % 5)}
            for i in range(8)]  # fmt: skip
    rows += [{"input_ids": [2] * (3 + 9 * (i % 2)), "sentiment_labels": -100, "ner_labels": [0] * (3 + 9 * (i % 2))}
             for i in range(32)]  # fmt: skip
    dataset = Dataset.from_list(rows)
    dataset = dataset.add_column("length", [len(row["input_ids"]) for row in rows])
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, token_batches_by_words=True, report_to="none",
        length_group_token_tasks=True, num_train_epochs=1, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    sampler = training_sampler(dataset, args, ["sentiment_labels", "ner_labels"])
    assert isinstance(sampler, TaskHomogeneousBatchSampler) and sampler.sampler.equal_word_groups == {1}
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])})
    trainer = MultiTaskTrainer(MultiTaskModel(_tiny_config()), args, train_dataset=dataset, processing_class=tokenizer)
    drawn, original = [], TaskHomogeneousSampler.epoch_batches
    monkeypatch.setattr(
        TaskHomogeneousSampler, "epoch_batches", lambda self: drawn.append(original(self)) or drawn[-1]
    )
    loader = trainer.get_train_dataloader()
    seen = [batch["attention_mask"].sum(dim=1).tolist() for batch in loader]
    assert len(loader) == len(seen) == 4 + 16
    assert seen == [dataset.select(batch)["length"] for batch in drawn[0]]
    assert sorted(i for batch in drawn[0] for i in batch) == list(range(40))
    # 16 token rows of 12 words and 16 of 3, in megabatches of 8 rows cut into 4 batches of about equal words: a
    # megabatch of 4 long and 4 short rows gives batches of 1, 2, 1 and 4 rows.
    assert any(len(batch) != 2 for batch in drawn[0] if batch[0] >= 8)
    assert trainer.train().global_step == 20
    assert len(drawn) == 2 and drawn[1] != drawn[0]  # training drew its own epoch, in a new order
    for conflict in (
        {"length_group_token_tasks": False},  # the default: random token batches have no length groups to cut
        {"train_sampling_strategy": "random"},
        {"loss_denominator": "expected"},
        {"auto_find_batch_size": True},
    ):
        with pytest.raises(HfMtlError, match="--token_batches_by_words"):
            MultiTaskTrainingArguments(
                output_dir=str(tmp_path), token_batches_by_words=True, report_to="none",
                **{"length_group_token_tasks": True, **conflict},
            )  # fmt: skip


def test_length_group_size_sets_how_many_batches_are_sorted_together(tmp_path):
    lengths = [(7 * i) % 32 for i in range(32)]  # 32 distinct lengths
    permutation = torch.randperm(32, generator=torch.Generator().manual_seed(3)).tolist()
    # One batch per megabatch: the permutation cut into batches, in its order (random batches).
    sampler = ShuffledLengthGroupedSampler(lengths, 4, megabatch_batches=1, generator=torch.Generator().manual_seed(3))
    order = list(sampler)
    starts = range(0, 32, 4)
    assert [sorted(order[i : i + 4]) for i in starts] == [sorted(permutation[i : i + 4]) for i in starts]
    # Two: each pair of batches holds 8 consecutive rows of the permutation, split into the 4 longest and 4 shortest.
    sampler = ShuffledLengthGroupedSampler(lengths, 4, megabatch_batches=2, generator=torch.Generator().manual_seed(3))
    order = list(sampler)
    for start in range(0, 32, 8):
        chunk = sorted(permutation[start : start + 8], key=lambda i: lengths[i], reverse=True)
        pair = [sorted(order[start : start + 4]), sorted(order[start + 4 : start + 8])]
        assert sorted(pair) == sorted([sorted(chunk[:4]), sorted(chunk[4:])])
    # The flag reaches both of hf_mtl's samplers.
    dataset = Dataset.from_list(
        [{"input_ids": [2] * (3 + i % 5), "sentiment_labels": i % 2, "ner_labels": [-100]} for i in range(64)]
    )
    keys = ["sentiment_labels", "ner_labels"]
    for composition, expected in (("per_task", TaskHomogeneousSampler), ("mixed", ShuffledLengthGroupedSampler)):
        args = MultiTaskTrainingArguments(
            output_dir=str(tmp_path), per_device_train_batch_size=4, length_group_size=2,
            batch_composition=composition, report_to="none",
        )  # fmt: skip
        sampler = training_sampler(dataset, args, keys)
        assert isinstance(sampler, expected) and sampler.megabatch_batches == 2
    with pytest.raises(HfMtlError, match="--length_group_size must be at least 1, got 0"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), length_group_size=0)


def test_annealed_sampling_moves_the_shares_from_proportional_to_nearly_equal():
    # 96 and 32 rows, batches of 8: 16 batches per epoch. Over E = 3 epochs alpha is 1, 0.6, 0.2, and the shares
    # 3^a / (3^a + 1) of 16 batches are 12 | 4, 10.55 | 5.45 -> 11 | 5, 8.88 | 7.12 -> 9 | 7 (largest remainder).
    groups = [0] * 96 + [1] * 32
    sampler = TaskHomogeneousSampler(groups, batch_size=8, generator=torch.Generator().manual_seed(0), num_epochs=3)
    for epoch, expected in enumerate([(12, 4), (11, 5), (9, 7)]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == 128  # the epoch keeps its length
        batches = [order[i : i + 8] for i in range(0, 128, 8)]
        assert all(len({groups[i] for i in batch}) == 1 for batch in batches)
        counts = [sum(groups[batch[0]] == g for batch in batches) for g in (0, 1)]
        assert tuple(counts) == expected
        # The small group's rows all come before any repeats; the large group's 88 or 72 rows never repeat.
        small = [i for i in order if groups[i] == 1]
        assert set(small) == set(range(96, 128)) and max(small.count(i) for i in small) <= 2
        large = [i for i in order if groups[i] == 0]
        assert len(set(large)) == len(large)
    args = MultiTaskTrainingArguments(output_dir="unused", max_steps=20, report_to="none")
    assert training_epochs(args, num_batches=8) == 3  # 8 steps per epoch: 20 steps begin a third epoch
    with pytest.raises(HfMtlError, match="--annealed_sampling sets the shares of per-task batches"):
        MultiTaskTrainingArguments(
            output_dir="unused", annealed_sampling=True, batch_composition="mixed", report_to="none"
        )


def test_interleaved_task_batches_are_evenly_spaced(tmp_path):
    # 48 rows of group 0 and 16 of group 1, batches of 8: 6 | 2 batches. Interleaved, group 1's two batches sit at
    # (k + v) / 2 and group 0's at (k + u) / 6, so exactly 3 of group 0's batches lie between group 1's, and every
    # epoch holds each row once. Two groups with as many batches alternate.
    groups = [0] * 48 + [1] * 16
    sampler = TaskHomogeneousSampler(
        groups, batch_size=8, generator=torch.Generator().manual_seed(0), interleaved=True
    )
    for _ in range(5):
        order = list(sampler)
        assert sorted(order) == list(range(64))
        batch_groups = [groups[order[i]] for i in range(0, 64, 8)]
        assert all(len({groups[i] for i in order[j : j + 8]}) == 1 for j in range(0, 64, 8))
        first, second = [i for i, group in enumerate(batch_groups) if group == 1]
        assert second - first == 4
    sampler = TaskHomogeneousSampler(
        [0] * 32 + [1] * 32, 8, generator=torch.Generator().manual_seed(1), interleaved=True
    )
    starts = set()
    for _ in range(6):
        batch_groups = [int(i >= 32) for i in list(sampler)[::8]]
        assert batch_groups in ([0, 1] * 4, [1, 0] * 4)
        starts.add(batch_groups[0])
    assert starts == {0, 1}  # which task comes first is drawn per epoch
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path}\ntask_batch_order: interleaved\nreport_to: none\n")
    *_, args = parse_args([str(config)])  # a config key like every training argument
    assert args.task_batch_order == "interleaved"
    sampler = training_sampler(
        Dataset.from_list([{"input_ids": [2, 3], "sentiment_labels": 0}] * 4), args, ["sentiment_labels"]
    )
    assert sampler.interleaved
    with pytest.raises(HfMtlError, match="--task_batch_order interleaved orders per-task batches"):
        MultiTaskTrainingArguments(
            output_dir="unused", task_batch_order="interleaved", batch_composition="mixed", report_to="none"
        )


def test_annealed_sampling_through_the_trainer_follows_the_epoch(tmp_path):
    # 24 sentiment rows and 8 NER rows, batches of 4: 6 | 2 batches in epoch 0 (alpha 1); in epoch 2 of 3 (alpha 0.2)
    # 8 * 3^0.2 / (3^0.2 + 1) = 4.44 | 3.56 -> 4 | 4. The Trainer tells the sampler the epoch; each step logs the task
    # it trained.
    rows = [{"input_ids": [2, 4 + i % 4, 3], "sentiment_labels": i % 2, "ner_labels": [-100] * 3} for i in range(24)]
    rows += [{"input_ids": [2, 6, 7, 3], "sentiment_labels": -100, "ner_labels": [-100, 0, 1, -100]}] * 8
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=3, annealed_sampling=True,
        logging_steps=1, report_to="none", disable_tqdm=True, save_strategy="no",
    )  # fmt: skip
    tokenizer = BertTokenizerFast(
        vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + list("abcd"))}
    )
    model = MultiTaskModel(_tiny_config())
    trainer = MultiTaskTrainer(model, args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(steps) == 24
    per_epoch = [steps[8 * e : 8 * e + 8] for e in range(3)]
    assert sum("ner_loss" in entry for entry in per_epoch[0]) == 2
    assert sum("ner_loss" in entry for entry in per_epoch[2]) == 4
    assert all(("ner_loss" in entry) != ("sentiment_loss" in entry) for entry in steps)


def test_balance_weights_give_every_task_the_mean_gradient_norm():
    assert balance_weights({"a": 1.0, "b": 3.0}) == {"a": 2.0, "b": 2.0 / 3.0}
    assert balance_weights({"a": 2.0, "b": 2.0}) == {"a": 1.0, "b": 1.0}
    assert balance_weights({"a": 0.0, "b": 2.0}) == {"a": 1.0, "b": 1.0}


def test_grad_balance_measures_each_task_gradient_norm_on_the_encoder(tiny_dir, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(str(tiny_dir), encoder_kwargs=NO_DROPOUT, classifier_dropout=0.0)
    rows = _rows(tokenizer)
    batch = MultiTaskDataCollator(tokenizer, ["ner_labels"])(rows)
    outputs = model(**batch)
    encoder = [p for p in model.encoder.parameters()]
    expected = {}
    for task in ("sentiment", "ner"):
        grads = torch.autograd.grad(outputs.task_losses[task], encoder, retain_graph=True, allow_unused=True)
        expected[task] = float(torch.cat([g.reshape(-1) for g in grads if g is not None]).norm())
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), loss_weighting="grad_balance", grad_balance_steps=1, report_to="none"
    )
    trainer = MultiTaskTrainer(model, args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.training_step(model, batch, trainer._get_num_items_in_batch([batch], args.device))
    assert trainer._grad_norms == pytest.approx(expected, rel=1e-5)
    mean = (expected["sentiment"] + expected["ner"]) / 2
    weights = trainer.current_task_weights()
    assert weights == pytest.approx({task: mean / norm for task, norm in expected.items()}, rel=1e-5)
    # The next step's loss uses them: w_s L_s + w_n L_n.
    loss = trainer.compute_loss(model, batch)
    expected_loss = sum(weights[t] * outputs.task_losses[t] for t in ("sentiment", "ner"))
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(HfMtlError, match="--grad_balance_steps must be at least 1"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), grad_balance_steps=0)


def test_split_by_task_gives_a_jointly_labelled_row_one_copy_per_task():
    rows = [
        {"input_ids": [2, 7, 3], "sentiment_labels": 1, "ner_labels": [-100, 3, -100]},  # both tasks
        {"input_ids": [2, 8, 3], "sentiment_labels": 0, "ner_labels": [-100, -100, -100]},  # sentiment only
        {"input_ids": [2, 9, 3], "sentiment_labels": -100, "ner_labels": [-100, 0, -100]},  # NER only
    ]
    split = split_by_task(Dataset.from_list(rows), ["sentiment_labels", "ner_labels"])
    assert split.to_list() == [
        {"input_ids": [2, 7, 3], "sentiment_labels": 1, "ner_labels": [-100, -100, -100]},
        {"input_ids": [2, 7, 3], "sentiment_labels": -100, "ner_labels": [-100, 3, -100]},
        rows[1],
        rows[2],
    ]
    singles = Dataset.from_list(rows[1:])
    assert split_by_task(singles, ["sentiment_labels", "ner_labels"]) is singles


def test_column_values_reads_a_shuffled_selection_in_its_row_order():
    rows = [{"length": i, "ner_labels": [i, -100][: 1 + i % 2]} for i in range(10)]
    dataset = Dataset.from_list(rows).shuffle(seed=3).select([7, 2, 5, 0])  # an indices mapping over the table
    order = [row["length"] for row in dataset]
    assert order != sorted(order)
    assert column_values(dataset, "length") == order
    assert column_values(dataset, "ner_labels") == [rows[i]["ner_labels"] for i in order]
    # Whatever the format: Python values, not tensors; a custom transform formats the values it returns.
    assert column_values(dataset.with_format("torch"), "ner_labels") == [rows[i]["ner_labels"] for i in order]
    doubled = dataset.with_transform(lambda batch: {"length": [2 * n for n in batch["length"]]})
    assert column_values(doubled, "length") == [2 * n for n in order]
    assert column_values({"length": (4, 5)}, "length") == [4, 5]  # anything else indexable by column name


def test_batch_composition_defaults_to_per_task_except_for_within_batch_gradient_comparisons(tmp_path):
    def composition(**kwargs) -> str:
        return MultiTaskTrainingArguments(output_dir=str(tmp_path), **kwargs).batch_composition

    assert composition() == "per_task"
    assert composition(loss_weighting="grad_balance") == "per_task"
    assert composition(loss_weighting="pcgrad") == "mixed"
    assert composition(log_grad_cosine=True) == "mixed"
    with pytest.raises(HfMtlError, match="--loss_weighting pcgrad compares the tasks' gradients within a batch"):
        composition(loss_weighting="pcgrad", batch_composition="per_task")
