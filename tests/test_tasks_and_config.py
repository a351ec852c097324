import pytest
from transformers import AutoConfig

import hf_mtl  # noqa: F401  (registers the Auto classes)
from hf_mtl import DEFAULT_TASKS, HfMtlError, MultiTaskConfig, parse_tasks
from hf_mtl.tasks import TaskKind


def test_default_tasks_are_sentiment_and_conll_ner():
    tasks = parse_tasks(None)
    assert [t.name for t in tasks] == ["sentiment", "ner"]
    assert tasks[0].kind == TaskKind.SEQUENCE_CLASSIFICATION and tasks[0].labels == ("negative", "positive")
    assert tasks[1].entity_types == ["PER", "LOC", "ORG", "MISC"]
    assert tasks[1].label2id["B-ORG"] == 5


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([{"name": "a", "kind": "regression", "labels": ["x", "y"]}], "unknown kind 'regression'"),
        ([{"name": "a", "kind": "sequence_classification", "labels": ["x"]}], "at least two label names"),
        ([{"name": "a", "kind": "sequence_classification", "labels": ["x", "x"]}], "more than once"),
        ([{"name": "a b", "kind": "sequence_classification", "labels": ["x", "y"]}], "task name 'a b'"),
        ([{"name": "a", "kind": "sequence_classification", "labels": ["x", "y"], "colour": 1}], "unknown task key"),
        ([{"name": "a", "kind": "sequence_classification", "labels": ["x", "y"], "weight": -1}], "weight -1"),
        ([{"name": "a", "kind": "token_classification", "labels": ["O", "B-PER"]}], "no tag 'I-PER'"),
        ([{"name": "a", "kind": "token_classification", "labels": ["O", "PER"]}], "IOB2"),
        (DEFAULT_TASKS + DEFAULT_TASKS[:1], "appear more than once"),
        ([], "non-empty list"),
    ],
)
def test_bad_task_specs_fail_with_one_clear_line(specs, message):
    with pytest.raises(HfMtlError, match=message) as info:
        parse_tasks(specs, where="cfg.yaml")
    assert str(info.value).startswith("cfg.yaml:") and "\n" not in str(info.value)


def test_config_round_trips_through_save_pretrained(tmp_path, tiny_config):
    tiny_config.tasks = tiny_config.tasks + [
        {"name": "topic", "kind": "sequence_classification", "labels": ["a", "b", "c"], "weight": 0.5}
    ]
    tiny_config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, MultiTaskConfig)
    assert loaded.tasks == tiny_config.tasks
    assert loaded.encoder.hidden_size == 32 and loaded.encoder.model_type == "bert"
    assert loaded.label_names == ["sentiment_labels", "ner_labels", "topic_labels"]


def test_config_rejects_bad_tasks():
    with pytest.raises(HfMtlError, match="unknown kind"):
        MultiTaskConfig(tasks=[{"name": "x", "kind": "span", "labels": ["a", "b"]}])
