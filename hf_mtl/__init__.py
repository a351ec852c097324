"""hf_mtl: multi-task learning (sentence and token tasks on one shared encoder) for the Hugging Face Trainer."""

from transformers import AutoConfig, AutoModel

from .configuration_mtl import MultiTaskConfig
from .data import DataSourceConfig, MixingStrategy, MultiTaskDataCollator, mix_datasets, tokenize_and_align
from .errors import HfMtlError
from .metrics import build_compute_metrics, preprocess_logits_for_metrics
from .modeling_mtl import MultiTaskModel, MultiTaskModelOutput
from .pipeline import MultiTaskPipeline, register_pipeline
from .tasks import DEFAULT_TASKS, TaskKind, TaskSpec, parse_tasks
from .tokenization import load_tokenizer
from .trainer import MultiTaskTrainer

__version__ = "0.1.0"

# `AutoConfig.from_pretrained(dir)` / `AutoModel.from_pretrained(dir)` on a saved hf_mtl model, after `import hf_mtl`.
AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig, exist_ok=True)
AutoModel.register(MultiTaskConfig, MultiTaskModel, exist_ok=True)
register_pipeline()

__all__ = [
    "DEFAULT_TASKS",
    "DataSourceConfig",
    "HfMtlError",
    "MixingStrategy",
    "MultiTaskConfig",
    "MultiTaskDataCollator",
    "MultiTaskModel",
    "MultiTaskModelOutput",
    "MultiTaskPipeline",
    "MultiTaskTrainer",
    "TaskKind",
    "TaskSpec",
    "build_compute_metrics",
    "load_tokenizer",
    "mix_datasets",
    "parse_tasks",
    "preprocess_logits_for_metrics",
    "tokenize_and_align",
]
