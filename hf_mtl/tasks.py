"""Task specifications: what a task is called, what kind of head it needs, and its label names."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from transformers.utils import ExplicitEnum

from .errors import HfMtlError


class TaskKind(ExplicitEnum):
    """The two kinds of heads: one prediction per sequence, or one per token."""

    SEQUENCE_CLASSIFICATION = "sequence_classification"
    TOKEN_CLASSIFICATION = "token_classification"


_TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TASK_KEYS = {"name", "kind", "labels", "weight"}


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task model.

    Args:
        name (`str`):
            Identifier used in label keys (`{name}_labels`), losses (`{name}_loss`) and metrics (`{name}_f1`).
        kind (`TaskKind` or `str`):
            `sequence_classification` (a head on the pooled [CLS]) or `token_classification` (a head on every token).
        labels (`list[str]`):
            Label names, in the order of the head's outputs. Token tasks use IOB2 tags (`O`, `B-PER`, `I-PER`, ...).
        weight (`float`, *optional*, defaults to 1.0):
            Weight of this task's loss in the combined loss.
    """

    name: str
    kind: TaskKind
    labels: tuple[str, ...]
    weight: float = 1.0
    label2id: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "kind", TaskKind(self.kind))
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "label2id", {label: i for i, label in enumerate(self.labels)})

    @property
    def label_key(self) -> str:
        """Name of this task's label column in datasets and batches (`sentiment_labels`)."""
        return f"{self.name}_labels"

    @property
    def is_token_task(self) -> bool:
        return self.kind == TaskKind.TOKEN_CLASSIFICATION

    @property
    def entity_types(self) -> list[str]:
        """Entity types of an IOB2 tag set (`PER`, `LOC`, ...), in first-seen order."""
        types = [label[2:] for label in self.labels if label[:2] in ("B-", "I-")]
        return list(dict.fromkeys(types))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind.value, "labels": list(self.labels), "weight": self.weight}

    @classmethod
    def from_dict(cls, spec: dict[str, Any], where: str = "tasks") -> TaskSpec:
        """Builds and validates a task from a config entry; errors name `where` (a file or flag)."""
        if not isinstance(spec, dict):
            raise HfMtlError(f"{where}: each task must be a mapping with name, kind and labels, got {spec!r}")
        unknown = set(spec) - _TASK_KEYS
        if unknown:
            raise HfMtlError(f"{where}: unknown task key(s) {sorted(unknown)}; allowed: {sorted(_TASK_KEYS)}")
        name = spec.get("name")
        if not isinstance(name, str) or not _TASK_NAME.match(name):
            raise HfMtlError(f"{where}: task name {name!r} must be a letter followed by letters, digits or '_'")
        kinds = [kind.value for kind in TaskKind]
        if spec.get("kind") not in kinds:
            raise HfMtlError(f"{where}: task {name!r} has unknown kind {spec.get('kind')!r}; expected one of {kinds}")
        labels = spec.get("labels")
        if not isinstance(labels, (list, tuple)) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
            raise HfMtlError(f"{where}: task {name!r} needs a list of at least two label names, got {labels!r}")
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise HfMtlError(f"{where}: task {name!r} lists label(s) {duplicates} more than once")
        weight = spec.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise HfMtlError(f"{where}: task {name!r} has weight {weight!r}; expected a finite number >= 0")
        task = cls(name=name, kind=spec["kind"], labels=tuple(labels), weight=float(weight))
        if task.is_token_task:
            _check_iob2_tag_set(task, where)
        return task


def _check_iob2_tag_set(task: TaskSpec, where: str) -> None:
    for label in task.labels:
        if label != "O" and label[:2] not in ("B-", "I-"):
            raise HfMtlError(f"{where}: token task {task.name!r} has tag {label!r}; IOB2 tags are O, B-X or I-X")
    for entity in task.entity_types:
        for prefix in ("B-", "I-"):
            if prefix + entity not in task.labels:
                raise HfMtlError(f"{where}: token task {task.name!r} has no tag {prefix + entity!r}")
    if "O" not in task.labels:
        raise HfMtlError(f"{where}: token task {task.name!r} needs the outside tag 'O'")


def parse_tasks(specs: list[dict[str, Any]] | None, where: str = "tasks") -> list[TaskSpec]:
    """Validates a list of task entries (from a config file, a flag or a saved config)."""
    if specs is None:
        specs = DEFAULT_TASKS
    if not isinstance(specs, (list, tuple)) or not specs:
        raise HfMtlError(f"{where}: expected a non-empty list of tasks, got {specs!r}")
    tasks = [TaskSpec.from_dict(spec, where) for spec in specs]
    names = [task.name for task in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise HfMtlError(f"{where}: task name(s) {duplicates} appear more than once")
    return tasks


NER_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]

DEFAULT_TASKS: list[dict[str, Any]] = [
    {"name": "sentiment", "kind": "sequence_classification", "labels": ["negative", "positive"], "weight": 1.0},
    {"name": "ner", "kind": "token_classification", "labels": NER_TAGS, "weight": 1.0},
]
"""The default pair: sentence sentiment (negative, positive) and CoNLL-style NER."""

__all__ = ["DEFAULT_TASKS", "NER_TAGS", "TaskKind", "TaskSpec", "parse_tasks"]
