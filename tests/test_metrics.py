"""`hf_mtl.metrics` on hand-built predictions whose scores were worked out by hand (in the comments), not by
calling seqeval or scikit-learn in the test."""

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from hf_mtl import parse_tasks
from hf_mtl.metrics import (
    build_compute_metrics,
    merge_dataset_metrics,
    preprocess_logits_for_metrics,
    sequence_metrics,
    token_metrics,
)

TASKS = parse_tasks(None)  # sentiment (negative, positive) and ner (O, B-/I- PER, LOC, ORG, MISC)
SENTIMENT, NER = TASKS
TOPIC = parse_tasks([{"name": "topic", "kind": "sequence_classification", "labels": ["food", "travel", "other"]}])[0]
IGNORED = -100

# Three sentences as a word-piece tokeniser and `tokenize_and_align` would leave them: [CLS] and [SEP], word pieces
# after a word's first, and padding carry the gold label -100 (None below). The prediction at those positions is
# chosen so that, were it scored, it would change the result: a B- or I- tag where gold has nothing (a spurious
# entity), an O inside an entity (which would split it), or -100 itself (the Trainer pads predictions with -100,
# not a valid tag id).
#   (word piece, gold tag or None, predicted tag or -100)
SENTENCES = [
    [
        ("[CLS]", None, "B-MISC"),
        ("anna", "B-PER", "B-PER"),
        ("##h", None, "O"),  # O between B-PER and I-PER: would split the PER entity in two
        ("smith", "I-PER", "I-PER"),
        ("visited", "O", "O"),
        ("new", "B-LOC", "B-LOC"),
        ("york", "I-LOC", "I-LOC"),
        ("city", "I-LOC", "O"),  # boundary error: predicted LOC "new york", gold LOC "new york city"
        ("[SEP]", None, "I-ORG"),
        ("[PAD]", None, -100),
        ("[PAD]", None, -100),
        ("[PAD]", None, -100),
    ],
    [
        ("[CLS]", None, "O"),
        ("acme", "B-ORG", "B-LOC"),  # type error: ORG predicted as LOC
        ("hired", "O", "O"),
        ("bob", "B-PER", "I-PER"),  # I-PER after O starts a PER entity (conlleval): an exact match
        ("in", "O", "O"),
        ("##x", None, "B-ORG"),  # would be a spurious ORG
        ("paris", "B-LOC", "B-LOC"),
        ("[SEP]", None, "B-PER"),
        ("[PAD]", None, -100),
        ("[PAD]", None, -100),
        ("[PAD]", None, -100),
        ("[PAD]", None, -100),
    ],
    [
        ("[CLS]", None, "B-LOC"),
        ("they", "O", "B-ORG"),  # spurious ORG
        ("watched", "O", "O"),
        ("star", "B-MISC", "O"),  # missed MISC "star wars"
        ("wars", "I-MISC", "O"),
        ("with", "O", "O"),
        ("lena", "B-PER", "B-PER"),
        ("##s", None, "I-LOC"),
        ("in", "O", "O"),
        ("rome", "B-LOC", "O"),  # missed LOC
        ("[SEP]", None, "I-MISC"),
        ("[PAD]", None, -100),
    ],
]
# Gold entities (8): PER anna smith, LOC new york city | ORG acme, PER bob, LOC paris | MISC star wars, PER lena,
#   LOC rome.  By type: PER 3, LOC 3, ORG 1, MISC 1.
# Predicted entities (7): PER anna smith (correct), LOC new york (wrong end) | LOC acme (wrong type), PER bob
#   (correct), LOC paris (correct) | ORG they (spurious), PER lena (correct).  By type: PER 3, LOC 3, ORG 1.
# Correct: 4 (PER x3, LOC paris).
#   overall: P = 4/7, R = 4/8 = 1/2, F1 = 2*4 / (7+8) = 8/15
#   PER:  P = 3/3, R = 3/3, F1 = 1
#   LOC:  P = 1/3, R = 1/3, F1 = 1/3
#   ORG:  P = 0/1, R = 0/1, F1 = 0
#   MISC: P = 0 (nothing predicted; zero_division=0), R = 0/1, F1 = 0
# Token accuracy over the 19 scored words: sentence 1 has 5/6 right (city), sentence 2 3/5 (acme, bob: I-PER is
# not B-PER), sentence 3 4/8 (they, star, wars, rome): 12/19.
NER_EXPECTED = {
    "ner_precision": 4 / 7,
    "ner_recall": 1 / 2,
    "ner_f1": 8 / 15,
    "ner_accuracy": 12 / 19,
    "ner_PER_precision": 1.0,
    "ner_PER_recall": 1.0,
    "ner_PER_f1": 1.0,
    "ner_PER_number": 3,
    "ner_LOC_precision": 1 / 3,
    "ner_LOC_recall": 1 / 3,
    "ner_LOC_f1": 1 / 3,
    "ner_LOC_number": 3,
    "ner_ORG_precision": 0.0,
    "ner_ORG_recall": 0.0,
    "ner_ORG_f1": 0.0,
    "ner_ORG_number": 1,
    "ner_MISC_precision": 0.0,
    "ner_MISC_recall": 0.0,
    "ner_MISC_f1": 0.0,
    "ner_MISC_number": 1,
}


def _ner_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(predicted ids, gold ids) of SENTENCES, shape (3, 12), -100 where gold has no label."""
    tag = NER.label2id
    predictions = [[p if p == IGNORED else tag[p] for _, _, p in sentence] for sentence in SENTENCES]
    labels = [[IGNORED if g is None else tag[g] for _, g, _ in sentence] for sentence in SENTENCES]
    return np.array(predictions), np.array(labels)


# Sentiment of the same three rows: row 2 comes from a corpus without sentiment labels (-100). Scored rows: 0
# (positive, predicted positive: right) and 2 (negative, predicted positive: wrong): accuracy 1/2; macro-F1: negative
# has F1 0 (never predicted), positive P = 1/2, R = 1, F1 = 2/3: (0 + 2/3) / 2 = 1/3.
SENTIMENT_PREDICTIONS = np.array([1, 0, 1])
SENTIMENT_LABELS = np.array([1, IGNORED, 0])


def _ner_and_sentiment(sentiment_labels=SENTIMENT_LABELS, ner_labels=None) -> EvalPrediction:
    ner_predictions, gold = _ner_arrays()
    return EvalPrediction(
        predictions={"sentiment": SENTIMENT_PREDICTIONS, "ner": ner_predictions},
        label_ids=(sentiment_labels, gold if ner_labels is None else ner_labels),  # in task order
    )


def test_token_metrics_match_the_hand_computed_entity_scores():
    predictions, labels = _ner_arrays()
    metrics = build_compute_metrics([NER])(EvalPrediction(predictions={"ner": predictions}, label_ids=(labels,)))
    assert set(metrics) == set(NER_EXPECTED) | {"combined_score"}
    for key, value in NER_EXPECTED.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    assert isinstance(metrics["ner_PER_number"], int)
    assert metrics["combined_score"] == pytest.approx(8 / 15, abs=1e-12)
    # The same through `token_metrics` directly.
    direct = token_metrics(NER, *_ner_arrays())
    assert direct == pytest.approx(NER_EXPECTED, abs=1e-12)


def test_token_metrics_score_only_the_labelled_positions():
    predictions, labels = _ner_arrays()
    # Only the words: drop every -100 column of every row; the scores do not move.
    words = [(pred[gold != IGNORED], gold[gold != IGNORED]) for pred, gold in zip(predictions, labels)]
    width = max(len(w) for w, _ in words)
    packed_predictions = np.array([np.pad(p, (0, width - len(p)), constant_values=0) for p, _ in words])
    packed_labels = np.array([np.pad(g, (0, width - len(g)), constant_values=IGNORED) for _, g in words])
    assert token_metrics(NER, packed_predictions, packed_labels) == pytest.approx(NER_EXPECTED, abs=1e-12)
    # Were the -100 positions scored (gold O there), the spurious tags at [CLS], [SEP] and word pieces would count:
    # the result would differ. Guards that the fixture really tests the masking.
    with_specials = np.where(labels == IGNORED, NER.label2id["O"], labels)
    scored_everywhere = token_metrics(NER, np.where(predictions == IGNORED, 0, predictions), with_specials)
    assert scored_everywhere["ner_precision"] < NER_EXPECTED["ner_precision"]
    assert scored_everywhere["ner_PER_precision"] < 1.0  # "anna ##h smith" split, and [SEP]'s B-PER


def test_sequence_metrics_accuracy_and_macro_f1_by_hand():
    # 8 labelled rows, 3 classes (food 0, travel 1, other 2); "other" is never predicted. Two rows come from a corpus
    # that does not label topics (-100): their predictions (food) must not count.
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, IGNORED, IGNORED])
    predictions = np.array([0, 0, 1, 1, 1, 1, 1, 0, 0, 0])
    # Right: rows 0, 1, 3, 4, 5 -> accuracy 5/8.
    # food:   TP 2 (rows 0, 1), predicted 3 (0, 1, 7), gold 3: F1 = 2*2 / (3+3) = 2/3
    # travel: TP 3 (rows 3, 4, 5), predicted 5 (2-6), gold 3: F1 = 2*3 / (5+3) = 3/4
    # other:  TP 0, predicted 0, gold 2: F1 = 0
    # macro-F1 = (2/3 + 3/4 + 0) / 3 = 17/36
    expected = {"topic_accuracy": 5 / 8, "topic_macro_f1": 17 / 36}
    assert sequence_metrics(TOPIC, predictions, labels) == pytest.approx(expected, abs=1e-12)
    metrics = build_compute_metrics([TOPIC])(EvalPrediction(predictions={"topic": predictions}, label_ids=labels))
    assert metrics == pytest.approx({**expected, "combined_score": 5 / 8}, abs=1e-12)


def test_combined_score_is_the_mean_of_sentiment_accuracy_and_ner_f1():
    metrics = build_compute_metrics(TASKS)(_ner_and_sentiment())
    assert metrics["sentiment_accuracy"] == pytest.approx(1 / 2, abs=1e-12)
    assert metrics["sentiment_macro_f1"] == pytest.approx(1 / 3, abs=1e-12)
    for key, value in NER_EXPECTED.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    assert set(metrics) == set(NER_EXPECTED) | {"sentiment_accuracy", "sentiment_macro_f1", "combined_score"}
    # (1/2 + 8/15) / 2 = 31/60
    assert metrics["combined_score"] == (metrics["sentiment_accuracy"] + metrics["ner_f1"]) / 2
    assert metrics["combined_score"] == pytest.approx(31 / 60, abs=1e-12)


def test_a_task_without_labelled_positions_reports_nothing():
    compute_metrics = build_compute_metrics(TASKS)
    no_sentiment = compute_metrics(_ner_and_sentiment(sentiment_labels=np.full(3, IGNORED)))
    assert not any(key.startswith("sentiment") for key in no_sentiment)
    assert set(no_sentiment) == set(NER_EXPECTED) | {"combined_score"}
    assert no_sentiment["combined_score"] == no_sentiment["ner_f1"] == pytest.approx(8 / 15, abs=1e-12)

    no_ner = compute_metrics(_ner_and_sentiment(ner_labels=np.full((3, 12), IGNORED)))
    assert set(no_ner) == {"sentiment_accuracy", "sentiment_macro_f1", "combined_score"}
    assert no_ner["combined_score"] == no_ner["sentiment_accuracy"] == pytest.approx(1 / 2, abs=1e-12)

    assert compute_metrics(_ner_and_sentiment(np.full(3, IGNORED), np.full((3, 12), IGNORED))) == {}


def _logits_with_argmax(ids: np.ndarray, num_labels: int, seed: int) -> np.ndarray:
    """Random logits whose arg-max is `ids` (-100 positions get an arbitrary arg-max, as real logits would)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*ids.shape, num_labels)).astype(np.float32)
    winners = np.where(ids == IGNORED, rng.integers(0, num_labels, size=ids.shape), ids)
    np.put_along_axis(logits, winners[..., None], logits.max(axis=-1, keepdims=True) + 1.0, axis=-1)
    return logits


def test_logits_give_the_same_metrics_as_their_argmax():
    ner_predictions, gold = _ner_arrays()
    logits = {
        "sentiment": _logits_with_argmax(SENTIMENT_PREDICTIONS, len(SENTIMENT.labels), seed=0),
        "ner": _logits_with_argmax(ner_predictions, len(NER.labels), seed=1),
    }
    argmax = {name: value.argmax(-1) for name, value in logits.items()}
    compute_metrics = build_compute_metrics(TASKS)
    from_logits = compute_metrics(EvalPrediction(predictions=logits, label_ids=(SENTIMENT_LABELS, gold)))
    from_ids = compute_metrics(EvalPrediction(predictions=argmax, label_ids=(SENTIMENT_LABELS, gold)))
    assert from_logits == from_ids
    assert from_logits["ner_f1"] == pytest.approx(8 / 15, abs=1e-12)
    assert from_logits["combined_score"] == pytest.approx(31 / 60, abs=1e-12)
    # preprocess_logits_for_metrics keeps exactly that arg-max.
    reduced = preprocess_logits_for_metrics({name: torch.from_numpy(value) for name, value in logits.items()}, None)
    for name in logits:
        np.testing.assert_array_equal(reduced[name].numpy(), argmax[name])


def test_merge_dataset_metrics_from_per_corpus_known_scores():
    compute_metrics = build_compute_metrics(TASKS)
    ner_predictions, gold = _ner_arrays()
    # Corpus "conll" labels only ner, corpora "sst" and "imdb" only sentiment; each evaluated on its own, as the
    # Trainer does with a dict of evaluation sets (keys eval_<corpus>_<metric>).
    conll = compute_metrics(
        EvalPrediction(
            predictions={"sentiment": np.zeros(3, int), "ner": ner_predictions}, label_ids=(np.full(3, IGNORED), gold)
        )
    )
    # sst: 3 of 4 right. negative: TP 1, predicted 2, gold 1: F1 2/3; positive: TP 2, predicted 2, gold 3: F1 4/5;
    # macro-F1 (2/3 + 4/5) / 2 = 11/15.
    sst = compute_metrics(
        EvalPrediction(
            predictions={"sentiment": np.array([1, 1, 0, 0]), "ner": np.zeros((4, 5), int)},
            label_ids=(np.array([1, 1, 0, 1]), np.full((4, 5), IGNORED)),
        )
    )
    imdb = compute_metrics(  # 1 of 4 right
        EvalPrediction(
            predictions={"sentiment": np.array([1, 1, 1, 0]), "ner": np.zeros((4, 5), int)},
            label_ids=(np.array([0, 0, 1, 1]), np.full((4, 5), IGNORED)),
        )
    )
    assert sst["sentiment_accuracy"] == 3 / 4 and imdb["sentiment_accuracy"] == 1 / 4
    assert sst["sentiment_macro_f1"] == pytest.approx(11 / 15, abs=1e-12)

    def prefixed(name, metrics):
        return {f"eval_{name}_{key}": value for key, value in metrics.items()} | {f"eval_{name}_loss": 0.5}

    # One corpus per task: each task's metrics come unprefixed from its corpus; combined = (3/4 + 8/15) / 2 = 77/120.
    one_each = {**prefixed("sst", sst), **prefixed("conll", conll)}
    merged = merge_dataset_metrics(one_each, "eval", ["sst", "conll"], TASKS)
    expected = {f"eval_{key}": value for key, value in NER_EXPECTED.items()}
    expected |= {"eval_sentiment_accuracy": 3 / 4, "eval_sentiment_macro_f1": 11 / 15}
    expected["eval_combined_score"] = 77 / 120
    assert merged == pytest.approx(expected, abs=1e-12)
    # Not the corpora's own combined scores or losses.
    assert not any("_sst_" in key or "_conll_" in key for key in merged)

    # Two corpora score sentiment: its primary metric is their mean, (3/4 + 1/4) / 2 = 1/2, and only that is merged
    # for sentiment. The combined score averages over tasks, not corpora: (1/2 + 8/15) / 2 = 31/60 (a mean over the
    # three corpora would be (3/4 + 1/4 + 8/15) / 3 = 23/45).
    three = {**one_each, **prefixed("imdb", imdb)}
    merged = merge_dataset_metrics(three, "eval", ["sst", "conll", "imdb"], TASKS)
    expected = {f"eval_{key}": value for key, value in NER_EXPECTED.items()}
    expected |= {"eval_sentiment_accuracy": 1 / 2, "eval_combined_score": 31 / 60}
    assert merged == pytest.approx(expected, abs=1e-12)
    # A corpus not named is left out: with sst alone for sentiment, its score is taken unaveraged.
    assert merge_dataset_metrics(three, "eval", ["sst", "conll"], TASKS)["eval_sentiment_accuracy"] == 3 / 4
