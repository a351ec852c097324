import copy

import pytest
import torch
from transformers import AutoModel

import hf_mtl  # noqa: F401
from hf_mtl import MultiTaskConfig, MultiTaskModel
from tests.conftest import TOPIC_TASK


def _batch(tokenizer, sentiment=(1, 0), ner_all_ignored=False):
    encoding = tokenizer(["anna loved paris", "the service in london was bad ."], padding=True, return_tensors="pt")
    ner = torch.full_like(encoding["input_ids"], -100)
    if not ner_all_ignored:
        ner[:, 1] = torch.tensor([1, 0])
    return {**encoding, "sentiment_labels": torch.tensor(sentiment), "ner_labels": ner}


def test_forward_returns_combined_loss_task_losses_and_logits(tiny_model, tokenizer):
    batch = _batch(tokenizer)
    out = tiny_model(**batch)
    length = batch["input_ids"].shape[1]
    assert out.logits["sentiment"].shape == (2, 2)
    assert out.logits["ner"].shape == (2, length, 9)
    assert set(out.task_losses) == {"sentiment", "ner"}
    assert torch.allclose(out.loss, out.task_losses["sentiment"] + out.task_losses["ner"])
    expected_ner = torch.nn.functional.cross_entropy(out.logits["ner"][:, 1], torch.tensor([1, 0]))
    assert torch.allclose(out.task_losses["ner"], expected_ner)


def test_loss_weights_come_from_the_config(tiny_dir, tokenizer):
    tasks = [{**t, "weight": w} for t, w in zip(MultiTaskConfig().tasks, (0.25, 2.0))]
    model = MultiTaskModel.from_encoder(str(tiny_dir), tasks)
    out = model(**_batch(tokenizer))
    assert torch.allclose(out.loss, 0.25 * out.task_losses["sentiment"] + 2.0 * out.task_losses["ner"])


@pytest.mark.parametrize("which", ["sentiment_only", "ner_only", "nothing"])
def test_batch_labelled_for_one_task_gives_finite_loss_and_gradients(tiny_model, tokenizer, which):
    batch = _batch(
        tokenizer, sentiment=(-100, -100) if which != "sentiment_only" else (1, 0), ner_all_ignored=which != "ner_only"
    )
    out = tiny_model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = {name: p.grad for name, p in tiny_model.named_parameters() if p.grad is not None}
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    absent = {"sentiment_only": "ner", "ner_only": "sentiment", "nothing": None}[which]
    if absent:
        assert out.task_losses[absent].item() == 0.0
        # In training, the head of a task the batch does not label is not run at all.
        assert absent not in out.logits and tiny_model.heads[absent].classifier.weight.grad is None
        present = "sentiment" if absent == "ner" else "ner"
        assert tiny_model.heads[present].classifier.weight.grad.abs().sum() > 0
    else:
        assert out.loss.item() == 0.0


def test_no_labels_means_no_loss(tiny_model, tokenizer):
    encoding = tokenizer(["hello"], return_tensors="pt")
    out = tiny_model(**encoding)
    assert out.loss is None and out.task_losses is None and set(out.logits) == {"sentiment", "ner"}


def test_unknown_label_keyword_is_an_error(tiny_model, tokenizer):
    with pytest.raises(TypeError, match="topic_labels"):
        tiny_model(**tokenizer(["hi"], return_tensors="pt"), topic_labels=torch.tensor([0]))


def test_third_task_from_config_alone(tiny_dir, tokenizer, tmp_path):
    model = MultiTaskModel.from_encoder(str(tiny_dir), MultiTaskConfig().tasks + [TOPIC_TASK])
    batch = {**_batch(tokenizer), "topic_labels": torch.tensor([2, -100])}
    out = model(**batch)
    assert out.logits["topic"].shape == (2, 3)
    assert torch.allclose(
        out.loss, out.task_losses["sentiment"] + out.task_losses["ner"] + 0.5 * out.task_losses["topic"]
    )
    model.save_pretrained(tmp_path)
    assert AutoModel.from_pretrained(tmp_path).config.task_specs[2].labels == ("food", "travel", "other")


def test_save_and_load_give_equal_outputs_and_labels(tiny_model, tokenizer, tmp_path):
    tiny_model.eval()
    batch = tokenizer(["maria flew to lisbon"], return_tensors="pt")
    expected = tiny_model(**batch).logits
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "pytorch_model.bin").exists()
    for loader in (MultiTaskModel.from_pretrained, AutoModel.from_pretrained):
        reloaded = loader(tmp_path).eval()
        assert type(reloaded) is MultiTaskModel
        assert reloaded.config.tasks == tiny_model.config.tasks
        for task, logits in reloaded(**batch).logits.items():
            torch.testing.assert_close(logits, expected[task], rtol=1e-5, atol=1e-6)


def test_from_encoder_loads_the_encoder_weights(tiny_dir):
    from transformers import BertModel

    encoder = BertModel.from_pretrained(tiny_dir)
    model = MultiTaskModel.from_encoder(str(tiny_dir))
    for name, tensor in encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], tensor, rtol=0, atol=0)


def test_from_encoder_builds_no_random_encoder_and_initialises_only_the_heads(tiny_dir, monkeypatch):
    from transformers import AutoModel, BertModel

    def refuse(*args, **kwargs):
        raise AssertionError("from_encoder built a random encoder")

    monkeypatch.setattr(AutoModel, "from_config", refuse)
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(str(tiny_dir), task_specific_layers=1)
    pretrained = BertModel.from_pretrained(tiny_dir).state_dict()
    top = {key.replace("encoder.layer.1.", "0."): value for key, value in pretrained.items() if ".layer.1." in key}
    for name, tensor in model.encoder.state_dict().items():
        torch.testing.assert_close(tensor, pretrained[name], rtol=0, atol=0, msg=name)
    for task in ("sentiment", "ner"):
        for name, tensor in model.task_layers[task].state_dict().items():
            torch.testing.assert_close(tensor, top[name], rtol=0, atol=0, msg=f"{task}: {name}")
        # The heads alone are new: N(0, initializer_range) weights and zero biases, as `_init_weights` draws them.
        head = model.heads[task].classifier
        assert head.bias.abs().sum().item() == 0.0
        assert 0.5 * 0.02 < head.weight.std().item() < 1.5 * 0.02
    # The encoder keeps the attention implementation it was loaded with, through from_encoder or the constructor,
    # and the model's config is the encoder's (as EncoderDecoderModel links them).
    assert model.encoder.config._attn_implementation == "sdpa"
    eager = MultiTaskModel.from_encoder(str(tiny_dir), encoder_kwargs={"attn_implementation": "eager"})
    assert eager.encoder.config._attn_implementation == "eager"
    loaded = BertModel.from_pretrained(tiny_dir, attn_implementation="eager")
    built = MultiTaskModel(MultiTaskConfig(encoder=copy.deepcopy(loaded.config)), encoder=loaded)
    assert built.encoder.config is built.config.encoder and built.config.encoder._attn_implementation == "eager"


def test_encoder_without_pooler_uses_cls_state(tokenizer):
    from transformers import DistilBertConfig

    config = MultiTaskConfig(
        encoder=DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=2, hidden_dim=37)
    )
    model = MultiTaskModel(config).eval()
    encoding = tokenizer(["anna loved paris"], return_tensors="pt")
    out = model(input_ids=encoding["input_ids"], attention_mask=encoding["attention_mask"])
    hidden = model.encoder(
        input_ids=encoding["input_ids"], attention_mask=encoding["attention_mask"]
    ).last_hidden_state
    torch.testing.assert_close(out.logits["sentiment"], model.heads["sentiment"].classifier(hidden[:, 0]))


def test_mean_pooling_reads_the_masked_mean(tiny_dir, tokenizer):
    model = MultiTaskModel.from_encoder(str(tiny_dir), sentence_pooling="mean").eval()
    encoding = tokenizer(["anna loved paris", "bad"], padding=True, return_tensors="pt")
    hidden = model.encoder(**encoding).last_hidden_state
    mask = encoding["attention_mask"].unsqueeze(-1).float()
    expected = model.heads["sentiment"].classifier((hidden * mask).sum(1) / mask.sum(1))
    torch.testing.assert_close(model(**encoding).logits["sentiment"], expected)


def test_unknown_sentence_pooling_is_an_error():
    with pytest.raises(hf_mtl.HfMtlError, match="sentence_pooling 'max'"):
        MultiTaskConfig(sentence_pooling="max")
