"""`MultiTaskModel`: one shared encoder, one head per task, and the combined loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .auto_map import write_model_module
from .configuration_mtl import MultiTaskConfig
from .errors import HfMtlError
from .heads import IGNORE_INDEX, TaskHead, build_head
from .loss_weighting import LossWeighting


@dataclass
class MultiTaskModelOutput(ModelOutput):
    """
    Output of [`MultiTaskModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when any `{task}_labels` is given):
            Weighted sum of the task losses (weights from `config.tasks`).
        task_losses (`dict[str, torch.FloatTensor]`, *optional*, returned with `loss`):
            Each labelled task's mean cross-entropy over its labelled positions (0 when a batch has none).
        logits (`dict[str, torch.FloatTensor]`):
            Each task's scores: `(batch_size, num_labels)` for sequence tasks, `(batch_size, sequence_length,
            num_labels)` for token tasks.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The encoder's hidden states, when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            The encoder's attention weights, when `output_attentions=True`.
    """

    loss: torch.FloatTensor | None = None
    task_losses: dict[str, torch.FloatTensor] | None = None
    logits: dict[str, torch.FloatTensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class MultiTaskPreTrainedModel(PreTrainedModel):
    config_class = MultiTaskConfig
    config: MultiTaskConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # `forward` takes `**task_labels`; that is not the Trainer's `num_items_in_batch` loss-kwargs protocol.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        if getattr(module, "log_variances", None) is not None and isinstance(module, MultiTaskPreTrainedModel):
            nn.init.zeros_(module.log_variances)
        if isinstance(module, TaskHead):
            std = getattr(self.config.encoder, "initializer_range", 0.02)
            nn.init.normal_(module.classifier.weight, mean=0.0, std=std)
            nn.init.zeros_(module.classifier.bias)
        else:
            super()._init_weights(module)


class MultiTaskModel(MultiTaskPreTrainedModel):
    r"""
    A shared encoder with one head per task in `config.tasks`: sequence heads read the pooled [CLS] output (the
    [CLS] hidden state for encoders without a pooler), token heads read every position.

    `forward` takes the encoder's inputs and, per task, an optional `{task}_labels` tensor (`-100` where a row or a
    token is not labelled for that task). It returns a [`MultiTaskModelOutput`] with the combined loss, each task's
    loss and each task's logits.

    Example:

    ```python
    >>> model = MultiTaskModel.from_encoder("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> outputs = model(**tokenizer(["Ada moved to Paris ."], return_tensors="pt"))  # doctest: +SKIP
    >>> outputs.logits["sentiment"].shape, outputs.logits["ner"].shape  # doctest: +SKIP
    ```"""

    def __init__(self, config: MultiTaskConfig):
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder)
        dropout = config.head_dropout
        self.heads = nn.ModuleDict(
            {task.name: build_head(task, config.encoder.hidden_size, dropout) for task in config.task_specs}
        )
        if config.loss_weighting == LossWeighting.UNCERTAINTY:
            # s_t = log(sigma_t^2), one per task, in task order (Kendall, Gal & Cipolla, 2018).
            self.log_variances = nn.Parameter(torch.zeros(len(config.task_specs)))
        self.post_init()

    @classmethod
    def from_encoder(
        cls, encoder_name_or_path: str, tasks: list[dict] | None = None, **config_kwargs
    ) -> MultiTaskModel:
        """Starts a multi-task model from a pretrained encoder checkpoint (a Hub id or a local folder).

        The encoder's weights are loaded; the heads are new and randomly initialised.

        Args:
            encoder_name_or_path (`str`): A checkpoint that `AutoModel` can load (BERT family first).
            tasks (`list[dict]`, *optional*): Task entries; defaults to `sentiment` and `ner`.
            config_kwargs: Further [`MultiTaskConfig`] fields (`classifier_dropout`).
        """
        from transformers import AutoConfig

        encoder_config = AutoConfig.from_pretrained(encoder_name_or_path)
        config = MultiTaskConfig(encoder=encoder_config, tasks=tasks, **config_kwargs)
        # The checkpoint's keys lack the `encoder.` prefix: `from_pretrained` maps them through
        # `base_model_prefix`, exactly as `BertForTokenClassification.from_pretrained("bert-base-cased")` does.
        return cls.from_pretrained(encoder_name_or_path, config=config)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **task_labels: torch.Tensor | None,
    ) -> MultiTaskModelOutput | tuple:
        r"""
        task_labels (`torch.LongTensor`, *optional*):
            One keyword per task, `{task}_labels`: shape `(batch_size,)` for sequence tasks and `(batch_size,
            sequence_length)` for token tasks, `-100` where there is no label. Tasks without a tensor add no loss.
        """
        specs = self.config.task_specs
        known = {task.label_key for task in specs}
        unknown = sorted(set(task_labels) - known)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.forward() got unexpected argument(s) {unknown}; labels: {sorted(known)}"
            )

        encoder_kwargs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "inputs_embeds": inputs_embeds,
            "output_hidden_states": output_hidden_states,
            "output_attentions": output_attentions,
            "return_dict": True,
        }
        if token_type_ids is not None:
            encoder_kwargs["token_type_ids"] = token_type_ids
        encoder_outputs = self.encoder(**{k: v for k, v in encoder_kwargs.items() if v is not None})
        sequence_output = encoder_outputs.last_hidden_state
        pooled_output = self.sentence_representation(encoder_outputs, attention_mask)

        logits = {task.name: self.heads[task.name](sequence_output, pooled_output) for task in specs}

        loss, task_losses = None, None
        labelled = [task for task in specs if task_labels.get(task.label_key) is not None]
        if labelled:
            task_losses = {
                task.name: self.heads[task.name].loss(logits[task.name], task_labels[task.label_key])
                for task in labelled
            }
            loss = self.combine_losses(task_losses, task_labels)

        output = MultiTaskModelOutput(
            loss=loss,
            task_losses=task_losses,
            logits=logits,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def combine_losses(
        self, task_losses: dict[str, torch.Tensor], task_labels: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """`sum_t w_t L_t`; with `loss_weighting="uncertainty"`, `sum_t w_t (exp(-s_t) L_t + s_t)` over the tasks
        this batch labels (an unlabelled task's `s_t` is left alone, else it would drift down unopposed)."""
        specs = {task.name: (index, task) for index, task in enumerate(self.config.task_specs)}
        total = 0.0
        for name, task_loss in task_losses.items():
            index, task = specs[name]
            if self.config.loss_weighting == LossWeighting.UNCERTAINTY:
                labelled = (task_labels[task.label_key] != IGNORE_INDEX).any().to(task_loss.dtype)
                log_variance = self.log_variances[index]
                task_loss = torch.exp(-log_variance) * task_loss + labelled * log_variance
            total = total + task.weight * task_loss
        return total

    def task_weights(self) -> dict[str, float]:
        """Each task's current effective weight: `w_t`, or `w_t exp(-s_t)` under uncertainty weighting."""
        weights = {task.name: task.weight for task in self.config.task_specs}
        if self.config.loss_weighting == LossWeighting.UNCERTAINTY:
            for index, name in enumerate(weights):
                weights[name] *= float(torch.exp(-self.log_variances[index].detach()))
        return weights

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As [`~transformers.PreTrainedModel.save_pretrained`] (safetensors), plus the one-line module that lets
        `AutoModel.from_pretrained(dir, trust_remote_code=True)` find the installed hf_mtl."""
        super().save_pretrained(save_directory, *args, **kwargs)
        write_model_module(save_directory)

    def sentence_representation(self, encoder_outputs, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """What sentence heads read, per `config.sentence_pooling`: pooled [CLS], [CLS] state or masked mean."""
        sequence_output = encoder_outputs.last_hidden_state
        pooling = self.config.sentence_pooling
        if pooling == "pooler" and getattr(encoder_outputs, "pooler_output", None) is not None:
            return encoder_outputs.pooler_output
        if pooling == "mean":
            if attention_mask is None:
                return sequence_output.mean(dim=1)
            mask = attention_mask.unsqueeze(-1).to(sequence_output.dtype)
            return (sequence_output * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return sequence_output[:, 0]

    def check_labels_match(self, tasks: list) -> None:
        """Raises if `tasks` (from data or flags) disagree with this model's tasks, label for label."""
        mine = {task.name: task.labels for task in self.config.task_specs}
        theirs = {task.name: task.labels for task in tasks}
        if mine != theirs:
            raise HfMtlError(f"the model's tasks and labels {mine} differ from the requested ones {theirs}")


__all__ = ["MultiTaskModel", "MultiTaskModelOutput", "MultiTaskPreTrainedModel"]
