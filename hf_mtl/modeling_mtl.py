"""`MultiTaskModel`: one shared encoder, one head per task, and the combined loss."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .auto_map import write_model_module
from .configuration_mtl import MultiTaskConfig
from .errors import HfMtlError
from .heads import IGNORE_INDEX, TaskHead, build_head
from .loss_weighting import LossWeighting
from .tasks import TaskSpec

logger = logging.getLogger(__name__)


@dataclass
class MultiTaskModelOutput(ModelOutput):
    """
    Output of [`MultiTaskModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when any `{task}_labels` is given):
            Weighted sum of the task losses (weights from `config.tasks`).
        task_losses (`dict[str, torch.FloatTensor]`, *optional*, returned with `loss`):
            Each labelled task's summed cross-entropy over its labelled positions, divided by that task's labelled
            positions in the batch (its mean), or in the whole optimizer step when `num_items_in_batch` is given.
            0 when a batch labels none.
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
    # The Trainer passes `num_items_in_batch` (a dict of each task's labelled positions over the optimizer step,
    # from `MultiTaskTrainer`) and then leaves the loss unscaled by gradient accumulation.
    accepts_loss_kwargs = True

    def _init_weights(self, module: nn.Module) -> None:
        if getattr(module, "log_variances", None) is not None and isinstance(module, MultiTaskPreTrainedModel):
            nn.init.zeros_(module.log_variances)
        if isinstance(module, TaskHead):
            std = getattr(self.config.encoder, "initializer_range", 0.02)
            for linear in (*module.dense, module.classifier):
                nn.init.normal_(linear.weight, mean=0.0, std=std)
                nn.init.zeros_(linear.bias)
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

    def __init__(self, config: MultiTaskConfig, encoder: PreTrainedModel | None = None):
        r"""
        encoder (`PreTrainedModel`, *optional*):
            The shared encoder, already built (as [`~MultiTaskModel.from_encoder`] passes a pretrained one, like
            `EncoderDecoderModel`'s `encoder`); its weights are kept. The model takes it over: it may drop its
            pooler and move its top layers into `task_layers`. Defaults to `AutoModel.from_config(config.encoder)`.
        """
        super().__init__(config)
        # The tasks the heads are built for, validated once (not on every forward).
        self.task_specs: list[TaskSpec] = config.task_specs
        if encoder is None:
            encoder = AutoModel.from_config(config.encoder)
        elif encoder.config is not config.encoder:
            # As `EncoderDecoderModel`: the model's config is the encoder's from now on.
            if encoder.config.to_dict() != config.encoder.to_dict():
                logger.warning("The encoder's config is replaced by config.encoder, which differs from it")
            config.encoder._attn_implementation = encoder.config._attn_implementation
            encoder.config = config.encoder
        self.encoder = encoder
        if config.encoder_pooler is False:
            drop_pooler(self.encoder)
        self.task_layers = split_task_layers(self.encoder, config.task_specific_layers, self.task_specs)
        dropout, activation = config.head_dropout, getattr(config.encoder, "hidden_act", "gelu")
        self.heads = nn.ModuleDict(
            {
                task.name: build_head(task, config.encoder.hidden_size, dropout, config.head_hidden_layers, activation)
                for task in self.task_specs
            }
        )
        if config.loss_weighting == LossWeighting.UNCERTAINTY:
            # s_t = log(sigma_t^2), one per task, in task order (Kendall, Gal & Cipolla, 2018).
            self.log_variances = nn.Parameter(torch.zeros(len(self.task_specs)))
        self.post_init()

    @classmethod
    def from_encoder(
        cls,
        encoder_name_or_path: str,
        tasks: list[dict] | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
        **config_kwargs,
    ) -> MultiTaskModel:
        """Starts a multi-task model from a pretrained encoder checkpoint (a Hub id or a local folder).

        The encoder is loaded with `AutoModel.from_pretrained`, as transformers loads the base model of any of its
        task models: every common layout works, bare (a saved `BertModel`, sentence-transformers) or prefixed by
        the architecture's `base_model_prefix` next to head tensors (`BertForPreTraining`'s `bert.*` and `cls.*`,
        `RobertaForMaskedLM`'s `roberta.*` and `lm_head.*`, ...). The heads are new and randomly initialised.

        Nothing else may be random: if any encoder tensor is missing from the checkpoint (or has another shape),
        this raises [`HfMtlError`] naming the checkpoint and the first missing keys. A pooler the checkpoint does
        not have (most masked-LM checkpoints; DistilBERT, ELECTRA and DeBERTa-v2 have none at all) is left out, and
        `sentence_pooling="pooler"` falls back to `cls` with a warning (`config.encoder_pooler=False`).

        Args:
            encoder_name_or_path (`str`): A checkpoint that `AutoModel` can load (BERT family first).
            tasks (`list[dict]`, *optional*): Task entries; defaults to `sentiment` and `ner`.
            encoder_kwargs (`dict`, *optional*): Passed to `AutoModel.from_pretrained` (`revision`, `cache_dir`,
                `token`, ...). The encoder is loaded in float32 unless `dtype` is given.
            config_kwargs: Further [`MultiTaskConfig`] fields (`classifier_dropout`, `sentence_pooling`, ...).
        """
        encoder_kwargs = {"dtype": torch.float32, **(encoder_kwargs or {})}
        encoder, loading_info = AutoModel.from_pretrained(
            encoder_name_or_path, output_loading_info=True, **encoder_kwargs
        )
        missing = sorted(loading_info["missing_keys"])
        pooler_missing = [key for key in missing if key.split(".")[0] == "pooler"]
        random_keys = [key for key in missing if key not in pooler_missing]
        random_keys += sorted(
            str(key[0] if isinstance(key, tuple) else key) for key in loading_info["mismatched_keys"]
        )
        if random_keys:
            raise HfMtlError(
                f"{encoder_name_or_path}: {len(random_keys)} encoder tensor(s) are not in the checkpoint and would be "
                f"randomly initialised (e.g. {', '.join(random_keys[:3])}); refusing to train a partly random encoder"
            )
        has_pooler = getattr(encoder, "pooler", None) is not None and not pooler_missing
        if not has_pooler:
            drop_pooler(encoder)
        config = MultiTaskConfig(encoder=encoder.config, tasks=tasks, encoder_pooler=has_pooler, **config_kwargs)
        # Each task's copy of the top layers starts from the pretrained ones; only the heads are initialised.
        return cls(config, encoder=encoder)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As [`~transformers.PreTrainedModel.from_pretrained`] for a saved hf_mtl model, except that a checkpoint
        missing any of the model's tensors (they would be randomly initialised) raises [`HfMtlError`]. To start
        from a plain encoder checkpoint, use [`~MultiTaskModel.from_encoder`]."""
        want_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        missing = sorted(loading_info["missing_keys"])
        if missing:
            raise HfMtlError(
                f"{pretrained_model_name_or_path}: {len(missing)} tensor(s) of the hf_mtl model are not in the "
                f"checkpoint and would be randomly initialised (e.g. {', '.join(missing[:3])}); to start from an "
                "encoder checkpoint use MultiTaskModel.from_encoder"
            )
        return (model, loading_info) if want_info else model

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
        label_smoothing: float = 0.0,
        num_items_in_batch: dict[str, torch.Tensor | int] | None = None,
        **task_labels: torch.Tensor | None,
    ) -> MultiTaskModelOutput | tuple:
        r"""
        label_smoothing (`float`, *optional*, defaults to 0.0):
            Label smoothing ε of every head's cross-entropy (the Trainer's `label_smoothing_factor`).
        num_items_in_batch (`dict[str, torch.Tensor]`, *optional*):
            Each task's labelled positions over the whole optimizer step (every micro-batch of gradient accumulation,
            every process), as [`MultiTaskTrainer`] counts them. Each task's summed cross-entropy is divided by it,
            so that the step's gradient is that of one pooled batch, as transformers normalises a causal LM loss
            under gradient accumulation. Without it, each task's loss is its mean over this batch.
        task_labels (`torch.LongTensor`, *optional*):
            One keyword per task, `{task}_labels`: shape `(batch_size,)` for sequence tasks and `(batch_size,
            sequence_length)` for token tasks, `-100` where there is no label. Tasks without a tensor add no loss.
        """
        specs = self.task_specs
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
        if len(self.task_layers):
            logits = self.task_layer_logits(encoder_outputs, attention_mask, task_labels)
        else:
            # In training, a task the batch does not label (every batch under per-task batches) is skipped.
            active = [task for task in specs if not self.skips(task, task_labels)]
            sequence_output = encoder_outputs.last_hidden_state
            pooled_output = None
            if any(not task.is_token_task for task in active):
                pooled_output = self.sentence_representation(encoder_outputs, attention_mask)
            logits = {task.name: self.heads[task.name](sequence_output, pooled_output) for task in active}

        loss, task_losses = None, None
        labelled = [task for task in specs if task_labels.get(task.label_key) is not None]
        if labelled:
            counts = num_items_in_batch or {}
            task_losses, shares = {}, {}
            for task in labelled:
                labels = task_labels[task.label_key]
                num_items = counts.get(task.name)
                if task.name not in logits:  # a training batch with no label for this task skipped it
                    task_losses[task.name] = shares[task.name] = encoder_outputs.last_hidden_state.new_zeros(())
                    continue
                task_losses[task.name] = self.heads[task.name].loss(
                    logits[task.name], labels, label_smoothing, num_items
                )
                labelled_here = (labels != IGNORE_INDEX).sum()
                shares[task.name] = labelled_here / (labelled_here if num_items is None else num_items).clamp(min=1)
            loss = self.combine_losses(task_losses, shares)
            if not loss.requires_grad and torch.is_grad_enabled() and self.training:
                # No task labelled anything (every one was skipped): a zero loss that backward still goes through.
                loss = loss + 0.0 * encoder_outputs.last_hidden_state.sum()

        output = MultiTaskModelOutput(
            loss=loss,
            task_losses=task_losses,
            logits=logits,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def combine_losses(self, task_losses: dict[str, torch.Tensor], shares: dict[str, torch.Tensor]) -> torch.Tensor:
        """`sum_t w_t L_t`; with `loss_weighting="uncertainty"`, `sum_t w_t (exp(-s_t) L_t + s_t)` over the tasks
        this batch labels (an unlabelled task's `s_t` is left alone, else it would drift down unopposed).

        `shares[t]` is this batch's labelled positions of task t over the step's denominator (1 for a batch mean, 0
        when the batch labels none): the `s_t` term is added in that part, so that over the step it counts once
        (under the trainer's `loss_denominator="expected"`, about once: the step's positions over their expected
        number)."""
        specs = {task.name: (index, task) for index, task in enumerate(self.task_specs)}
        total = 0.0
        for name, task_loss in task_losses.items():
            index, task = specs[name]
            if self.config.loss_weighting == LossWeighting.UNCERTAINTY:
                log_variance = self.log_variances[index]
                task_loss = torch.exp(-log_variance) * task_loss + shares[name].to(task_loss.dtype) * log_variance
            total = total + task.weight * task_loss
        return total

    def task_weights(self) -> dict[str, float]:
        """Each task's current effective weight: `w_t`, or `w_t exp(-s_t)` under uncertainty weighting."""
        weights = {task.name: task.weight for task in self.task_specs}
        if self.config.loss_weighting == LossWeighting.UNCERTAINTY:
            for index, name in enumerate(weights):
                weights[name] *= float(torch.exp(-self.log_variances[index].detach()))
        return weights

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As [`~transformers.PreTrainedModel.save_pretrained`] (safetensors), plus the one-line module that lets
        `AutoModel.from_pretrained(dir, trust_remote_code=True)` find the installed hf_mtl."""
        super().save_pretrained(save_directory, *args, **kwargs)
        write_model_module(save_directory)

    def task_layer_logits(
        self, encoder_outputs, attention_mask: torch.Tensor | None, task_labels: dict[str, torch.Tensor | None]
    ) -> dict[str, torch.Tensor]:
        """Each task's logits from its own copy of the top `config.task_specific_layers` layers, run on the shared
        layers' output with the arguments the encoder gave its last shared layer (attention mask, relative
        positions, ...). In training, a task that the batch does not label skips its layers and has no logits."""
        shared_layer = encoder_layers(self.encoder)[-1]
        args, kwargs = shared_layer.__dict__.pop("_hf_mtl_layer_inputs")
        logits = {}
        for task in self.task_specs:
            if self.skips(task, task_labels):
                continue
            hidden = encoder_outputs.last_hidden_state
            for layer in self.task_layers[task.name]:
                output = layer(hidden, *args[1:], **kwargs)
                hidden = output[0] if isinstance(output, tuple) else output
            pooled = None
            if not task.is_token_task:
                pooler = getattr(self.encoder, "pooler", None)
                use_pooler = self.config.sentence_pooling == "pooler" and pooler is not None
                pooled = pooler(hidden) if use_pooler else self.pool(hidden, attention_mask)
            logits[task.name] = self.heads[task.name](hidden, pooled)
        return logits

    def skips(self, task: TaskSpec, task_labels: dict[str, torch.Tensor | None]) -> bool:
        """In training, a task whose labels are given and all -100 is not computed: it would add nothing to the loss
        or the gradients. In evaluation and inference every task is."""
        labels = task_labels.get(task.label_key)
        return self.training and labels is not None and not bool((labels != IGNORE_INDEX).any())

    def sentence_representation(self, encoder_outputs, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """What sentence heads read, per `config.sentence_pooling`: pooled [CLS], [CLS] state or masked mean."""
        if self.config.sentence_pooling == "pooler" and getattr(encoder_outputs, "pooler_output", None) is not None:
            return encoder_outputs.pooler_output
        return self.pool(encoder_outputs.last_hidden_state, attention_mask)

    def pool(self, sequence_output: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The masked mean (`sentence_pooling="mean"`) or the first attended position's state (otherwise)."""
        pooling = self.config.sentence_pooling
        if pooling == "mean":
            if attention_mask is None:
                return sequence_output.mean(dim=1)
            mask = attention_mask.unsqueeze(-1).to(sequence_output.dtype)
            return (sequence_output * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if attention_mask is None:
            return sequence_output[:, 0]
        # The first attended position: [CLS] under right padding (0) and under left padding alike.
        first = attention_mask.long().argmax(dim=1)
        return sequence_output[torch.arange(sequence_output.shape[0], device=first.device), first]

    def check_labels_match(self, tasks: list) -> None:
        """Raises if `tasks` (from data or flags) disagree with this model's tasks, label for label."""
        mine = {task.name: task.labels for task in self.task_specs}
        theirs = {task.name: task.labels for task in tasks}
        if mine != theirs:
            raise HfMtlError(f"the model's tasks and labels {mine} differ from the requested ones {theirs}")


def encoder_layers(encoder: PreTrainedModel) -> nn.ModuleList:
    """The encoder's stack of transformer layers (`encoder.layer` in BERT, RoBERTa, ELECTRA, DeBERTa;
    `transformer.layer` in DistilBERT): the `ModuleList` named `layer` or `layers`."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers") and len(module):
            return module
    raise HfMtlError(
        f"task_specific_layers: the {encoder.config.model_type} encoder has no list of layers named `layer` (ALBERT "
        "shares one layer's weights across its depth); use task_specific_layers=0"
    )


def _keep_layer_inputs(module: nn.Module, args: tuple, kwargs: dict) -> None:
    """A forward pre-hook on the last shared layer: keeps what the encoder passes it, for the task layers."""
    module.__dict__["_hf_mtl_layer_inputs"] = (args, kwargs)


def split_task_layers(encoder: PreTrainedModel, num_layers: int, tasks: list[TaskSpec]) -> nn.ModuleDict:
    """Moves the encoder's top `num_layers` layers out of it and gives every task its own copy (the first task the
    layers themselves, the others deep copies), so that the shared encoder ends below them. Empty when
    `num_layers` is 0."""
    if not num_layers:
        return nn.ModuleDict()
    layers = encoder_layers(encoder)
    if num_layers >= len(layers):
        raise HfMtlError(
            f"task_specific_layers={num_layers} leaves no shared layer: the encoder has {len(layers)} layers"
        )
    top = nn.ModuleList(layers[len(layers) - num_layers :])
    for _ in range(num_layers):
        del layers[len(layers) - 1]
    layers[-1].register_forward_pre_hook(_keep_layer_inputs, with_kwargs=True)
    return nn.ModuleDict({task.name: top if i == 0 else copy.deepcopy(top) for i, task in enumerate(tasks)})


def drop_pooler(encoder: PreTrainedModel) -> None:
    """Removes an encoder's pooler (as `add_pooling_layer=False` builds BERT-style models): its weights are not
    pretrained, and the encoders' `forward` then returns no `pooler_output`."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None


__all__ = ["MultiTaskModel", "MultiTaskModelOutput", "MultiTaskPreTrainedModel"]
