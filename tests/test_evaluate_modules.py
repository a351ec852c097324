"""hf_mtl's `evaluate` modules (`hf_mtl/evaluate_modules/`), loaded from their folder: the numbers of seqeval and
scikit-learn, worked out by hand on small cases; `build_compute_metrics` on them gives exactly the scores of the
implementation that called seqeval and scikit-learn directly; loading works offline, once per process, and under
torchrun."""

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import evaluate
import numpy as np
import pytest
from seqeval.metrics import accuracy_score as seqeval_accuracy
from seqeval.metrics import classification_report
from sklearn.metrics import accuracy_score, f1_score
from transformers import EvalPrediction

from hf_mtl import parse_tasks
from hf_mtl.metrics import METRIC_NAMES, build_compute_metrics, load_metric, metric_path

ROOT = Path(__file__).resolve().parents[1]
X = -100  # a position without a label
DEFAULT = parse_tasks(None)  # sentiment (negative, positive); ner: O 0, B-/I- PER 1/2, LOC 3/4, ORG 5/6, MISC 7/8
TOPIC_CHUNK = parse_tasks(
    [
        {"name": "topic", "kind": "sequence_classification", "labels": ["food", "travel", "other"]},
        # O 0, B-NP 1, I-NP 2, B-VP 3, I-VP 4, B-PP 5, I-PP 6
        {
            "name": "chunk",
            "kind": "token_classification",
            "labels": ["O", "B-NP", "I-NP", "B-VP", "I-VP", "B-PP", "I-PP"],
        },
    ]
)


@pytest.fixture(scope="module")
def seqeval_module():
    return evaluate.load(metric_path("hf_mtl_seqeval"), keep_in_memory=True)


def _random_tags(rng, types: list[str], rows: int) -> list[list[str]]:
    tags = ["O"] + [f"{prefix}-{kind}" for kind in types for prefix in "BI"]
    return [list(rng.choice(tags, size=rng.integers(1, 12))) for _ in range(rows)]


def test_seqeval_module_by_hand(seqeval_module):
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predictions = [["B-PER", "I-PER", "O", "O"], ["B-LOC", "O"]]
    # Gold: PER, LOC, ORG; predicted: PER (right), LOC on "B-ORG" (wrong type). P = 1/2, R = 1/3, F1 = 2/5.
    # Tags right: 4 of 6. LOC: 1 predicted, 0 right, 1 gold; ORG: never predicted (P = 0 by zero_division).
    scores = seqeval_module.compute(predictions=predictions, references=references)
    assert all(type(scores[kind]["number"]) is int for kind in ("PER", "LOC", "ORG"))
    assert {kind: scores.pop(kind) for kind in ("PER", "LOC", "ORG")} == {
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1},
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1},
    }
    expected = {"overall_precision": 1 / 2, "overall_recall": 1 / 3, "overall_f1": 2 / 5, "overall_accuracy": 4 / 6}
    assert scores == pytest.approx(expected, abs=1e-12)


def test_seqeval_module_equals_seqeval(seqeval_module):
    rng = np.random.default_rng(0)
    for _ in range(5):
        references = _random_tags(rng, ["PER", "LOC", "ORG"], rows=30)
        predictions = [
            list(rng.choice(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC"], len(r))) for r in references
        ]
        scores = seqeval_module.compute(predictions=predictions, references=references)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = classification_report(references, predictions, output_dict=True, zero_division=0)
        overall = report.pop("micro avg")
        assert scores["overall_precision"] == overall["precision"]
        assert scores["overall_recall"] == overall["recall"]
        assert scores["overall_f1"] == overall["f1-score"]
        assert scores["overall_accuracy"] == seqeval_accuracy(references, predictions)
        types = set(report) - {"macro avg", "weighted avg"}
        assert types == {"PER", "LOC", "ORG", "MISC"}
        for kind in types:
            expected = report[kind]
            assert scores[kind] == {
                "precision": expected["precision"],
                "recall": expected["recall"],
                "f1": expected["f1-score"],
                "number": expected["support"],
            }


def test_accuracy_and_macro_f1_modules_by_hand_and_against_scikit_learn():
    accuracy = evaluate.load(metric_path("hf_mtl_accuracy"), keep_in_memory=True)
    macro_f1 = evaluate.load(metric_path("hf_mtl_macro_f1"), keep_in_memory=True)
    # food 0, travel 1, other 2; "other" never predicted. Right: rows 0, 1, 3, 4, 5 -> 5/8.
    # F1: food 2*2/(3+3) = 2/3, travel 2*3/(5+3) = 3/4, other 0 -> macro (2/3 + 3/4 + 0) / 3 = 17/36.
    references = [0, 0, 0, 1, 1, 1, 2, 2]
    predictions = [0, 0, 1, 1, 1, 1, 1, 0]
    assert accuracy.compute(predictions=predictions, references=references) == {"accuracy": 5 / 8}
    scores = macro_f1.compute(predictions=predictions, references=references, labels=[0, 1, 2])
    assert scores["macro_f1"] == pytest.approx(17 / 36, abs=1e-12)
    # A label neither gold nor predicted counts with F1 0 when named in `labels`: (1 + 1 + 0 + 0) / 4.
    assert macro_f1.compute(predictions=[0, 1], references=[0, 1], labels=[0, 1, 2, 3]) == {"macro_f1": 0.5}

    rng = np.random.default_rng(1)
    for _ in range(5):
        references, predictions = rng.integers(0, 4, size=50), rng.integers(0, 3, size=50)
        assert accuracy.compute(predictions=predictions, references=references)["accuracy"] == accuracy_score(
            references, predictions
        )
        assert macro_f1.compute(predictions=predictions, references=references, labels=[0, 1, 2, 3, 4])[
            "macro_f1"
        ] == f1_score(references, predictions, labels=[0, 1, 2, 3, 4], average="macro", zero_division=0)


# Hand-built evaluation predictions, and the scores the previous `hf_mtl/metrics.py` (git HEAD 290428f, which
# called seqeval's `classification_report` and scikit-learn directly) returned for them: captured by running that
# file on these cases in a scratch script. The new implementation returned the same dicts, bit for bit.
def _one_hot_logits(ids: np.ndarray, num_labels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*ids.shape, num_labels)).astype(np.float32)
    winners = np.where(ids == X, rng.integers(0, num_labels, size=ids.shape), ids)
    np.put_along_axis(logits, winners[..., None], logits.max(axis=-1, keepdims=True) + 1.0, axis=-1)
    return logits


def _case_default():
    """Both default tasks; a MISC predicted with no MISC gold; the last row labels nothing for ner or sentiment."""
    ner_predictions = np.array(
        [[0, 1, 2, 0, 3, 0, X], [5, 6, 0, 0, 7, 8, 0], [2, 0, 0, 3, 4, X, X], [1, 0, 0, 0, X, X, X]]
    )
    ner_labels = np.array([[X, 1, 2, 0, 3, 4, X], [5, 6, 0, 0, 0, 0, X], [1, 0, 0, 3, 4, X, X], [X, X, X, X, X, X, X]])
    return DEFAULT, EvalPrediction(
        predictions={"sentiment": np.array([0, 1, 1, 0]), "ner": ner_predictions},
        label_ids=(np.array([0, 1, 0, X]), ner_labels),
    )


def _case_topic_chunk_logits():
    """Logits, not ids; topic "other" and chunk type PP are neither gold nor predicted."""
    chunk_ids = np.array([[1, 2, 3, 1, 2, 0], [1, 3, 4, 1, 0, 0], [2, 2, 0, 3, 1, X]])
    chunk_labels = np.array([[1, 2, 3, 1, 2, 0], [1, 3, 1, 2, 0, X], [1, 2, 0, 3, 1, X]])
    return TOPIC_CHUNK, EvalPrediction(
        predictions={
            "topic": _one_hot_logits(np.array([0, 1, 1, 0, 1, 0]), 3, seed=0),
            "chunk": _one_hot_logits(chunk_ids, 7, seed=1),
        },
        label_ids=(np.array([0, 1, 0, 0, 1, 1]), chunk_labels),
    )


def _case_single_token_task():
    """One task, labels as a bare array; I-PER after B-LOC starts a PER; a MISC split in two."""
    predictions = np.array([[X, 3, 2, 0, 5, X], [X, 0, 7, 7, 8, X]])
    labels = np.array([[X, 3, 4, 0, 5, X], [X, 0, 7, 8, 8, X]])
    return [DEFAULT[1]], EvalPrediction(predictions={"ner": predictions}, label_ids=labels)


def _case_no_gold_entity():
    """Entities predicted where gold has none (P = R = 0); sentiment unlabelled."""
    return DEFAULT, EvalPrediction(
        predictions={"sentiment": np.array([1, 0]), "ner": np.array([[0, 1, 0], [3, 4, 0]])},
        label_ids=(np.array([X, X]), np.array([[0, 0, 0], [0, 0, X]])),
    )


def _ner_scores(prefix: str, overall: tuple, per_type: dict[str, tuple]) -> dict[str, float]:
    scores = dict(zip([f"{prefix}_precision", f"{prefix}_recall", f"{prefix}_f1", f"{prefix}_accuracy"], overall))
    for kind, (precision, recall, f1, number) in per_type.items():
        scores |= {
            f"{prefix}_{kind}_precision": precision,
            f"{prefix}_{kind}_recall": recall,
            f"{prefix}_{kind}_f1": f1,
            f"{prefix}_{kind}_number": number,
        }
    return scores


PREVIOUS_IMPLEMENTATION = {
    "default": (
        _case_default,
        {"sentiment_accuracy": 0.6666666666666666, "sentiment_macro_f1": 0.6666666666666666}
        | _ner_scores(
            "ner",
            (0.6666666666666666, 0.8, 0.7272727272727272, 0.75),
            {
                "PER": (1.0, 1.0, 1.0, 2),
                "LOC": (0.5, 0.5, 0.5, 2),
                "ORG": (1.0, 1.0, 1.0, 1),
                "MISC": (0.0, 0.0, 0.0, 0),
            },
        )
        | {"combined_score": 0.6969696969696969},
    ),
    "topic_chunk_logits": (
        _case_topic_chunk_logits,
        {"topic_accuracy": 0.6666666666666666, "topic_macro_f1": 0.4444444444444444}
        | _ner_scores(
            "chunk",
            (0.7777777777777778, 0.7777777777777778, 0.7777777777777778, 0.8125),
            {
                "NP": (0.8333333333333334, 0.8333333333333334, 0.8333333333333334, 6),
                "VP": (0.6666666666666666, 0.6666666666666666, 0.6666666666666666, 3),
                "PP": (0.0, 0.0, 0.0, 0),
            },
        )
        | {"combined_score": 0.7222222222222222},
    ),
    "single_token_task": (
        _case_single_token_task,
        _ner_scores(
            "ner",
            (0.2, 0.3333333333333333, 0.25, 0.75),
            {
                "PER": (0.0, 0.0, 0.0, 0),
                "LOC": (0.0, 0.0, 0.0, 1),
                "ORG": (1.0, 1.0, 1.0, 1),
                "MISC": (0.0, 0.0, 0.0, 1),
            },
        )
        | {"combined_score": 0.25},
    ),
    "no_gold_entity": (
        _case_no_gold_entity,
        _ner_scores("ner", (0.0, 0.0, 0.0, 0.4), {kind: (0.0, 0.0, 0.0, 0) for kind in ("PER", "LOC", "ORG", "MISC")})
        | {"combined_score": 0.0},
    ),
}


@pytest.mark.parametrize("case", PREVIOUS_IMPLEMENTATION)
def test_build_compute_metrics_gives_the_previous_implementations_scores(case):
    make_case, expected = PREVIOUS_IMPLEMENTATION[case]
    tasks, eval_prediction = make_case()
    metrics = build_compute_metrics(tasks)(eval_prediction)
    assert metrics == pytest.approx(expected, abs=1e-12)
    assert set(metrics) == set(expected)
    assert all(type(value) is (int if key.endswith("_number") else float) for key, value in metrics.items())


def test_each_module_is_loaded_once_per_process(monkeypatch):
    calls = []

    def counting_load(path, **kwargs):
        calls.append(Path(path).name)
        return real_load(path, **kwargs)

    real_load = evaluate.load
    monkeypatch.setattr(evaluate, "load", counting_load)
    load_metric.cache_clear()
    try:
        tasks, eval_prediction = _case_default()
        compute_metrics = build_compute_metrics(tasks)
        first = compute_metrics(eval_prediction)
        second = build_compute_metrics(tasks)(eval_prediction)  # another factory, same process
        assert first == second == compute_metrics(eval_prediction)
    finally:
        load_metric.cache_clear()
    assert sorted(calls) == sorted(METRIC_NAMES)


def test_unknown_metric_name():
    with pytest.raises(ValueError, match="hf_mtl_seqeval"):
        metric_path("seqeval")


_OFFLINE_SCRIPT = """
import json, os, sys
from pathlib import Path
import evaluate
from hf_mtl.metrics import METRIC_NAMES, load_metric, metric_path

inputs = {
    "hf_mtl_accuracy": {"predictions": [0, 1, 1], "references": [0, 1, 0]},
    "hf_mtl_macro_f1": {"predictions": [0, 1, 1], "references": [0, 1, 0], "labels": [0, 1]},
    "hf_mtl_seqeval": {"predictions": [["B-PER", "O"]], "references": [["B-PER", "B-LOC"]]},
}
results = {}
for name in METRIC_NAMES:
    results[name] = evaluate.load(metric_path(name)).compute(**inputs[name])  # as a user would
    assert load_metric(name).compute(**inputs[name]) == results[name]  # as hf_mtl does
print(json.dumps(results))
"""


def _files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.mark.integration  # a subprocess: ~15 s of imports
def test_modules_load_offline_into_fresh_caches(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_METRICS_CACHE": str(tmp_path / "metrics_cache"),
        "HF_MODULES_CACHE": str(tmp_path / "modules_cache"),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # any attempt to reach the Hub would fail
    }
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results["hf_mtl_accuracy"] == {"accuracy": 2 / 3}
    assert results["hf_mtl_macro_f1"]["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2, abs=1e-12)
    assert results["hf_mtl_seqeval"]["overall_precision"] == 1.0
    assert results["hf_mtl_seqeval"]["overall_recall"] == 0.5
    # evaluate copies each script into its modules cache (loading's only files; it also makes empty folders in the
    # metrics cache) ...
    modules = _files_under(tmp_path / "modules_cache")
    assert all(any(path.endswith(f"{name}.py") for path in modules) for name in METRIC_NAMES)
    # ... and the `evaluate.load(path)` default leaves a lock in the metrics cache after `compute`; hf_mtl's
    # `keep_in_memory=True` loads write nothing there, which the torchrun test below checks on its own.


_TORCHRUN_SCRIPT = """
import json, os, sys
import numpy as np
import torch.distributed as dist
from transformers import EvalPrediction
from hf_mtl import parse_tasks
from hf_mtl.metrics import build_compute_metrics

dist.init_process_group("gloo")
dist.barrier()  # both ranks load the modules into the same empty caches at once
X = -100
tasks = parse_tasks(None)
eval_prediction = EvalPrediction(
    predictions={"sentiment": np.array([0, 1, 1, 0]), "ner": np.array([[1, 2, 0, 3], [0, 5, 6, 0]])},
    label_ids=(np.array([0, 1, 0, X]), np.array([[1, 2, 0, 3], [0, 5, 0, X]])),
)
compute_metrics = build_compute_metrics(tasks)
metrics = [compute_metrics(eval_prediction) for _ in range(3)]
assert metrics[0] == metrics[1] == metrics[2]
with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump(metrics[0], f)
dist.destroy_process_group()
"""


@pytest.mark.integration
def test_compute_metrics_under_torchrun_with_two_processes(tmp_path):
    script = tmp_path / "two_ranks.py"
    script.write_text(textwrap.dedent(_TORCHRUN_SCRIPT))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_METRICS_CACHE": str(tmp_path / "metrics_cache"),
        "HF_MODULES_CACHE": str(tmp_path / "modules_cache"),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*command, str(script), str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert rank0 == rank1
    # sentiment 2/3 right; ner: PER, LOC right, ORG "B-ORG I-ORG" predicted where gold is "B-ORG": P = R = 2/3.
    assert rank0["sentiment_accuracy"] == pytest.approx(2 / 3, abs=1e-12)
    assert rank0["ner_precision"] == rank0["ner_recall"] == pytest.approx(2 / 3, abs=1e-12)
    # Computing wrote no cache file and no lock: no evaluate rendez-vous between the ranks, nothing to clean up.
    assert _files_under(tmp_path / "metrics_cache") == []
