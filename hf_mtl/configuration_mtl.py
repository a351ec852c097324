"""`MultiTaskConfig`: the shared encoder's config plus the list of tasks."""

from __future__ import annotations

import logging
from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .auto_map import AUTO_MAP, write_config_module
from .errors import HfMtlError
from .loss_weighting import LossWeighting
from .tasks import TaskSpec, parse_tasks

logger = logging.getLogger(__name__)

SENTENCE_POOLING = ("pooler", "cls", "mean")


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
        sentence_pooling (`str`, *optional*, defaults to `"pooler"`):
            What sentence heads read: `pooler` (the encoder's pooled [CLS] output), `cls` (the [CLS] hidden state) or
            `mean` (the mean over non-padding tokens, which is how sentence-transformers checkpoints such as
            all-MiniLM-L6-v2 were trained). `pooler` on an encoder without a pretrained pooler becomes `cls`, with a
            warning.
        encoder_pooler (`bool`, *optional*):
            Whether the encoder checkpoint has a pretrained pooler. `False` (DistilBERT, ELECTRA, DeBERTa-v2 and most
            masked-LM checkpoints): the encoder is built without one, since its weights would be random, and
            `sentence_pooling="pooler"` falls back to `cls`. `None` (a config built by hand): the encoder is built as
            `AutoModel.from_config` builds it. [`MultiTaskModel.from_encoder`] sets it from the checkpoint.
        max_seq_length (`int`, *optional*):
            The length (in sub-tokens) the model was trained with; the `multitask` pipeline truncates or windows
            texts at it. Set by the training script; `None` means the tokenizer's maximum.
        task_specific_layers (`int`, *optional*, defaults to 0):
            Partial sharing: each task gets its own copy of the encoder's top `task_specific_layers` transformer
            layers (initialised from the pretrained ones), above the shared layers below them. 0 shares the whole
            encoder. A text still runs the shared layers once, then each task's copies: with 2 tasks and 2 of 6
            layers, a joint forward costs 8/6 of one encoder's instead of 2 encoders'.
        head_hidden_layers (`int`, *optional*, defaults to 0):
            Depth of every head: that many `hidden_size`-wide dense layers with the encoder's activation and dropout
            before each head's linear layer. 0 is dropout + linear, as `BertFor{Sequence,Token}Classification`.
        loss_weighting (`str`, *optional*, defaults to `"static"`):
            How task losses combine (see `hf_mtl.loss_weighting`). `uncertainty` gives the model one learned
            log-variance per task (`log_variances`), saved with it; `dwa` and `pcgrad` are applied by the trainer.

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
    sentence_pooling: str = "pooler"
    loss_weighting: str = "static"
    encoder_pooler: bool | None = None
    max_seq_length: int | None = None
    task_specific_layers: int = 0
    head_hidden_layers: int = 0

    def __post_init__(self, **kwargs):
        # The parent sets every sub-config's attention implementation to this config's (`None` unless given): an
        # encoder config that has one (a loaded encoder's) keeps it.
        encoder_attention = getattr(self.encoder, "_attn_implementation", None)
        super().__post_init__(**kwargs)
        if encoder_attention is not None and self.encoder._attn_implementation is None:
            self.encoder._attn_implementation = encoder_attention
        # Lets `trust_remote_code=True` load the model where hf_mtl is installed but not imported.
        self.auto_map = dict(AUTO_MAP)
        weightings = [strategy.value for strategy in LossWeighting]
        if self.loss_weighting not in weightings:
            raise HfMtlError(f"loss_weighting {self.loss_weighting!r} is not one of {weightings}")
        if self.sentence_pooling not in SENTENCE_POOLING:
            raise HfMtlError(f"sentence_pooling {self.sentence_pooling!r} is not one of {list(SENTENCE_POOLING)}")
        if self.sentence_pooling == "pooler" and self.encoder_pooler is False:
            logger.warning(
                "The encoder checkpoint has no pretrained pooler: sentence heads read the [CLS] hidden state "
                "(sentence_pooling='cls') instead of a randomly initialised pooler"
            )
            self.sentence_pooling = "cls"
        for name in ("task_specific_layers", "head_hidden_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise HfMtlError(f"{name} must be an integer >= 0, got {value!r}")
        if self.max_seq_length is not None and self.max_seq_length < 1:
            raise HfMtlError(f"max_seq_length must be positive, got {self.max_seq_length}")
        # Validate once and store plain dicts, so that `config.json` stays readable and round-trips.
        self.tasks = [task.to_dict() for task in parse_tasks(self.tasks, where=f"{type(self).__name__}.tasks")]

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        write_config_module(save_directory)

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


def saved_multitask_config(name_or_path: str, **kwargs) -> MultiTaskConfig | None:
    """The [`MultiTaskConfig`] of `name_or_path` if it is a saved hf_mtl model (a Hub id or a local folder, told
    apart by its config's `model_type`, as `AutoConfig` does), else `None` (a plain encoder checkpoint).

    Raises `OSError` / `ValueError` as `AutoConfig.from_pretrained` does when there is no config to read.
    """
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    return config if isinstance(config, MultiTaskConfig) else None


__all__ = ["MultiTaskConfig", "saved_multitask_config"]
