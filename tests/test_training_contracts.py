"""The Trainer's contracts with several evaluation corpora (early stopping, best model), label smoothing per head,
saved models by Hub id, and the pipeline's trained length and padding side."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import constants
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import AutoTokenizer, BertConfig, pipeline

from hf_mtl import MultiTaskModel, MultiTaskTrainer, parse_tasks, preprocess_logits_for_metrics, tokenize_and_align
from hf_mtl.arguments import MultiTaskTrainingArguments
from hf_mtl.data.sources import DEMO_DATASET, load_source, parse_sources
from hf_mtl.loading import resolve_tasks
from run_mtl import main

TASKS = parse_tasks(None)
FAST = ["--logging_steps", "1", "--disable_tqdm", "true", "--eval_steps", "1", "--save_steps", "1"]


@pytest.fixture(scope="module")
def demo(tokenizer):
    loaded = load_source(parse_sources([{"name": "demo", "dataset_name": DEMO_DATASET}], TASKS)[0], TASKS)
    return {split: tokenize_and_align(rows, tokenizer, TASKS) for split, rows in loaded.splits.items()}


def _no_dropout_model(tiny_dir, **config_kwargs) -> MultiTaskModel:
    torch.manual_seed(0)
    encoder_kwargs = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return MultiTaskModel.from_encoder(
        str(tiny_dir), encoder_kwargs=encoder_kwargs, classifier_dropout=0.0, **config_kwargs
    )


def _smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """By the definition: -(1-ε) log p_gold - ε/C Σ_c log p_c, averaged over the labelled positions only."""
    log_p = torch.log_softmax(logits.reshape(-1, logits.shape[-1]).double(), dim=-1)
    labels = labels.reshape(-1)
    keep = labels != -100
    gold = log_p[keep].gather(1, labels[keep].unsqueeze(1)).squeeze(1)
    per_position = -(1 - epsilon) * gold - epsilon * log_p[keep].mean(dim=-1)
    return per_position.mean()


def test_label_smoothing_applies_to_both_heads_and_ignores_unlabelled_positions(tiny_dir, tokenizer, tmp_path):
    model = _no_dropout_model(tiny_dir)
    batch = tokenizer(["anna visited paris", "a dull film"], padding=True, return_tensors="pt")
    width = batch["input_ids"].shape[1]
    sentiment = torch.tensor([1, -100])
    ner = torch.full((2, width), -100)
    ner[0, 1:4] = torch.tensor([1, 0, 3])  # B-PER O B-LOC; row 1 and the special tokens unlabelled
    epsilon = 0.1
    outputs = model(**batch, sentiment_labels=sentiment, ner_labels=ner, label_smoothing=epsilon)
    expected_sentiment = _smoothed_cross_entropy(outputs.logits["sentiment"], sentiment, epsilon)
    expected_ner = _smoothed_cross_entropy(outputs.logits["ner"], ner, epsilon)
    torch.testing.assert_close(outputs.task_losses["sentiment"].double(), expected_sentiment)
    torch.testing.assert_close(outputs.task_losses["ner"].double(), expected_ner)
    # Smoothing changes the loss: the unsmoothed one is the plain cross-entropy.
    plain = model(**batch, sentiment_labels=sentiment, ner_labels=ner)
    torch.testing.assert_close(
        plain.task_losses["ner"], F.cross_entropy(outputs.logits["ner"].reshape(-1, 9), ner.reshape(-1))
    )
    assert abs(plain.task_losses["ner"].item() - expected_ner.item()) > 1e-3

    # --label_smoothing_factor reaches both heads through the Trainer's compute_loss.
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), label_smoothing_factor=epsilon, report_to="none")
    trainer = MultiTaskTrainer(model=model, args=args, processing_class=tokenizer)
    inputs = {**batch, "sentiment_labels": sentiment, "ner_labels": ner}
    loss = trainer.compute_loss(model, inputs)
    torch.testing.assert_close(loss.double(), expected_sentiment + expected_ner)


def test_early_stopping_sees_the_merged_metric_of_two_corpora(two_corpora, tmp_path):
    # A learning rate of 1e-12 changes no prediction: combined_score cannot improve after the first evaluation, so
    # patience 1 stops training at the second one (step 2 of 10).
    output_dir = tmp_path / "stopped"
    main(
        [str(two_corpora), "--output_dir", str(output_dir), "--max_steps", "10", "--learning_rate", "1e-12"]
        + ["--early_stopping_patience", "1", "--do_predict", "false", *FAST]
    )
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    evaluations = [entry for entry in state["log_history"] if "eval_combined_score" in entry]
    assert [entry["step"] for entry in evaluations] == [1, 2]
    assert evaluations[0]["eval_combined_score"] == evaluations[1]["eval_combined_score"]


def test_load_best_model_at_end_defaults_to_combined_score_and_restores_the_best(two_corpora, tmp_path):
    config = yaml.safe_load(two_corpora.read_text())
    del config["metric_for_best_model"]  # the Trainer's default would be eval_loss, which two corpora do not have
    two_corpora.write_text(yaml.safe_dump(config))
    output_dir = tmp_path / "best"
    main(
        [str(two_corpora), "--output_dir", str(output_dir), "--max_steps", "4", "--learning_rate", "5e-3"]
        + ["--load_best_model_at_end", "true", "--do_predict", "false", *FAST]
    )
    state = json.loads((output_dir / "trainer_state.json").read_text())
    scores = {e["step"]: e["eval_combined_score"] for e in state["log_history"] if "eval_combined_score" in e}
    best_step = max(sorted(scores), key=lambda step: scores[step])  # the first of equal bests, as the Trainer keeps
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert state["best_metric"] == scores[best_step]
    final = load_file(output_dir / "model.safetensors")
    best = load_file(output_dir / f"checkpoint-{best_step}" / "model.safetensors")
    assert final.keys() == best.keys() and all(torch.equal(final[key], best[key]) for key in final)


def test_load_best_model_restores_a_best_checkpoint_that_is_not_the_last(tiny_dir, tokenizer, demo, tmp_path):
    # Scripted scores per evaluation (each evaluation scores both corpora): best at step 2 of 4.
    scores = [0.2, 0.9, 0.5, 0.4]
    calls = []

    def compute_metrics(_prediction) -> dict[str, float]:
        calls.append(1)
        score = scores[(len(calls) - 1) // 2]
        return {"sentiment_accuracy": score, "ner_f1": score}

    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        eval_strategy="steps",
        eval_steps=1,
        save_steps=1,
        load_best_model_at_end=True,
        report_to="none",
        disable_tqdm=True,
    )
    model = _no_dropout_model(tiny_dir)
    small = demo["validation"].select(range(8))
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset=demo["train"],
        eval_dataset={"a": small, "b": small},
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
    )
    trainer.train()
    assert args.metric_for_best_model == "combined_score"
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2") and trainer.state.best_metric == 0.9
    best = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    last = load_file(tmp_path / "checkpoint-4" / "model.safetensors")
    state = trainer.model.state_dict()
    assert all(torch.equal(state[key], best[key]) for key in best)
    assert any(not torch.equal(best[key], last[key]) for key in best)


def _hub_cache_with(model_folder: Path, cache: Path, repo_id: str) -> None:
    """Lays out `model_folder` as the Hub cache holds a downloaded repository: refs/main -> snapshots/<commit>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in model_folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())


def test_a_saved_model_is_recognised_by_hub_id(tiny_dir, tmp_path, monkeypatch):
    tasks = [{"name": "ner", "kind": "token_classification", "labels": ["O", "B-PER", "I-PER"], "weight": 1.0}]
    saved = tmp_path / "saved"
    MultiTaskModel.from_encoder(str(tiny_dir), tasks).save_pretrained(saved)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(saved)
    cache = tmp_path / "hub-cache"
    _hub_cache_with(saved, cache, "user/my-mtl-model")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # no local folder named user/my-mtl-model

    assert resolve_tasks("user/my-mtl-model") == (parse_tasks(tasks), True)
    texts = tmp_path / "texts.txt"
    texts.write_text("anna visited paris\n")
    output_dir = tmp_path / "predicted"
    main(
        ["--model_name_or_path", "user/my-mtl-model", "--do_predict", "--predict_file", str(texts)]
        + ["--output_dir", str(output_dir)]
    )
    record = json.loads((output_dir / "text_predictions.jsonl").read_text())
    assert set(record) == {"text", "entities"} and record["text"] == "anna visited paris"


def test_training_saves_max_seq_length_and_the_pipeline_windows_at_it(two_corpora, tmp_path):
    output_dir = tmp_path / "short"
    main(
        [str(two_corpora), "--output_dir", str(output_dir), "--max_steps", "1", "--max_seq_length", "12"]
        + ["--do_predict", "false", "--do_eval", "false", "--eval_strategy", "no", *FAST]
    )
    assert json.loads((output_dir / "config.json").read_text())["max_seq_length"] == 12
    pipe = pipeline("multitask", model=str(output_dir))
    lengths = []
    pipe.model.register_forward_pre_hook(
        lambda _m, _a, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    text = " ".join(["anna visited paris and rome"] * 8)  # 40 words: far over 12 sub-tokens
    answer = pipe(text)
    assert lengths and max(lengths) == 12
    assert all(entity["word"] == text[entity["start"] : entity["end"]] for entity in answer["entities"])


def _position_free(model: MultiTaskModel) -> MultiTaskModel:
    """Every position and segment embedding made equal: the encoder then cannot tell where padding sits, so a text
    must get the same answer padded on the left, on the right, or alone."""
    embeddings = model.encoder.embeddings
    with torch.no_grad():
        embeddings.position_embeddings.weight.copy_(
            embeddings.position_embeddings.weight[:1].expand_as(embeddings.position_embeddings.weight)
        )
        embeddings.token_type_embeddings.weight.copy_(
            embeddings.token_type_embeddings.weight[:1].expand_as(embeddings.token_type_embeddings.weight)
        )
    return model.eval()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_the_pipeline_reads_each_text_from_its_own_positions_under_left_padding(tiny_dir, pooling):
    model = _position_free(_no_dropout_model(tiny_dir, sentence_pooling=pooling))
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir, padding_side="left")
    texts = ["anna visited paris", "a dull film , slow and long and dull", "rome", "omar loved the food in lima !"]
    pipe = pipeline("multitask", model=model, tokenizer=tokenizer)
    batched = pipe(texts, batch_size=4)
    alone = [pipe(text) for text in texts]
    for together, single in zip(batched, alone):
        assert together["sentiment"]["label"] == single["sentiment"]["label"]
        assert together["sentiment"]["score"] == pytest.approx(single["sentiment"]["score"], abs=1e-5)
        assert [(e["entity_group"], e["start"], e["end"]) for e in together["entities"]] == [
            (e["entity_group"], e["start"], e["end"]) for e in single["entities"]
        ]
    # The batch really was padded on the left, and a random tiny model does tag entities here.
    assert pipe.tokenizer.padding_side == "left" and any(answer["entities"] for answer in alone)


def test_encoder_config_without_pooler_builds_no_pooler(tiny_dir):
    config = BertConfig.from_pretrained(tiny_dir)
    from hf_mtl import MultiTaskConfig

    mtl_config = MultiTaskConfig(encoder=config, encoder_pooler=False)
    assert mtl_config.sentence_pooling == "cls"
    model = MultiTaskModel(mtl_config)
    assert model.encoder.pooler is None
    assert not any(name.startswith("encoder.pooler") for name in model.state_dict())


def test_a_checkpoint_without_pooler_trains_on_cls_and_the_card_says_so(two_corpora, tiny_dir, tmp_path, caplog):
    from transformers import BertForMaskedLM

    mlm = tmp_path / "bert-mlm"
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig.from_pretrained(tiny_dir)).save_pretrained(mlm)  # keys bert.*, cls.*; no pooler
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(mlm)
    output_dir = tmp_path / "from-mlm"
    with caplog.at_level("WARNING", logger="hf_mtl"):
        main(
            [str(two_corpora), "--model_name_or_path", str(mlm), "--output_dir", str(output_dir)]
            + ["--max_steps", "1", "--do_predict", "false", "--do_eval", "false", "--eval_strategy", "no", *FAST]
        )
    assert sum("no pretrained pooler" in record.getMessage() for record in caplog.records) == 1
    config = json.loads((output_dir / "config.json").read_text())
    assert config["sentence_pooling"] == "cls" and config["encoder_pooler"] is False
    assert not any(key.startswith("encoder.pooler") for key in load_file(output_dir / "model.safetensors"))
    assert "The encoder checkpoint has no pretrained pooler" in (output_dir / "README.md").read_text()
