"""Property tests: label alignment under any words, tags and truncation; the loss under any label mask."""

import string

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_mtl import MultiTaskModel
from hf_mtl.data.preprocessing import align_word_labels

WORD = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + "éüñçøß", min_size=1, max_size=10)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(words=st.lists(WORD, min_size=1, max_size=25), data=st.data(), max_length=st.integers(3, 40))
def test_every_word_keeps_its_tag_or_was_truncated_away(tokenizer, words, data, max_length):
    tags = data.draw(st.lists(st.integers(0, 8), min_size=len(words), max_size=len(words)))
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    word_ids = encoding.word_ids()
    labels = align_word_labels(word_ids, tags)
    assert len(labels) == len(encoding["input_ids"]) <= max_length
    kept = [w for w in word_ids if w is not None]
    # Truncation only cuts from the end: the kept words are a prefix of the sentence, in order.
    assert kept == sorted(kept) and set(kept) == set(range(len(set(kept))))
    for word in range(len(words)):
        positions = [i for i, w in enumerate(word_ids) if w == word]
        if positions:
            assert labels[positions[0]] == tags[word]
            assert all(labels[i] == -100 for i in positions[1:])
        else:
            assert all(w is None or w < word for w in word_ids)  # truncated away, with every word after it
    assert all(labels[i] == -100 for i, w in enumerate(word_ids) if w is None)


@SETTINGS
@given(
    batch=st.integers(1, 4),
    length=st.integers(2, 9),
    data=st.data(),
)
def test_loss_and_gradients_are_finite_for_any_label_mask(tiny_dir, batch, length, data):
    torch.manual_seed(0)
    model = _model(tiny_dir)
    model.zero_grad()
    input_ids = torch.randint(5, 60, (batch, length))
    sentiment = torch.tensor(data.draw(st.lists(st.sampled_from([-100, 0, 1]), min_size=batch, max_size=batch)))
    ner = torch.tensor(
        data.draw(
            st.lists(
                st.lists(st.sampled_from([-100, -100, 0, 3, 8]), min_size=length, max_size=length),
                min_size=batch,
                max_size=batch,
            )
        )
    )
    out = model(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), sentiment_labels=sentiment, ner_labels=ner
    )
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for task, labels in (("sentiment", sentiment), ("ner", ner)):
        if (labels == -100).all():
            assert out.task_losses[task].item() == 0.0


_MODELS: dict = {}


def _model(tiny_dir) -> MultiTaskModel:
    if tiny_dir not in _MODELS:
        _MODELS[tiny_dir] = MultiTaskModel.from_encoder(str(tiny_dir))
    return _MODELS[tiny_dir]
