"""`MultiTaskConfig`: the shared encoder's config plus the list of tasks."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .tasks import TaskSpec, parse_tasks


class MultiTaskConfig(PretrainedConfig):
    r"""
    Configuration of a [`MultiTaskModel`]: one shared encoder (any `AutoModel` encoder, the BERT family first) and
    one head per task.

    Args:
        encoder (`PretrainedConfig` or `dict`, *optional*):
            Config of the shared encoder. Defaults to a `bert` config.
        tasks (`list[dict]`, *optional*):
            One entry per task: `{"name", "kind", "labels", "weight"}` with `kind` in `sequence_classification`,
            `token_classification`. Defaults to `sentiment` (negative, positive) and `ner` (CoNLL tags).
        classifier_dropout (`float`, *optional*):
            Dropout before each head. Defaults to the encoder's `classifier_dropout`, then its
            `hidden_dropout_prob`, then 0.1.

    Example:

    ```python
    >>> from transformers import BertConfig
    >>> from hf_mtl import MultiTaskConfig, MultiTaskModel

    >>> config = MultiTaskConfig(encoder=BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2))
    >>> [task.name for task in config.task_specs]
    ['sentiment', 'ner']
    >>> model = MultiTaskModel(config)
    ```"""

    model_type = "hf_mtl"
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}
    # Per-task losses are not predictions: keep them out of what `compute_metrics` receives.
    keys_to_ignore_at_inference = ["task_losses", "hidden_states", "attentions"]

    encoder: PretrainedConfig | dict | None = None
    tasks: list[dict[str, Any]] | None = None
    classifier_dropout: float | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Validate once and store plain dicts, so that `config.json` stays readable and round-trips.
        self.tasks = [task.to_dict() for task in parse_tasks(self.tasks, where=f"{type(self).__name__}.tasks")]

    @property
    def task_specs(self) -> list[TaskSpec]:
        """The tasks as validated [`TaskSpec`] objects, in head order."""
        return parse_tasks(self.tasks)

    @property
    def label_names(self) -> list[str]:
        """Batch keys holding each task's labels (`sentiment_labels`, `ner_labels`), for `Trainer.label_names`."""
        return [task.label_key for task in self.task_specs]

    @property
    def head_dropout(self) -> float:
        for value in (self.classifier_dropout, getattr(self.encoder, "classifier_dropout", None)):
            if value is not None:
                return float(value)
        return float(getattr(self.encoder, "hidden_dropout_prob", 0.1))


__all__ = ["MultiTaskConfig"]
