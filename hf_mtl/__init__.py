"""hf_mtl: multi-task learning (sentence and token tasks on one shared encoder) for the Hugging Face Trainer."""

from transformers import AutoConfig, AutoModel

from .arguments import DataArguments, ModelArguments, MultiTaskTrainingArguments, parse_args
from .configuration_mtl import MultiTaskConfig
from .data import DataSourceConfig, MixingStrategy, MultiTaskDataCollator, mix_datasets, tokenize_and_align
from .data.multitask_datasets import MultiTaskDatasets, load_multitask_datasets
from .errors import HfMtlError
from .loading import load_model_and_tokenizer
from .loss_weighting import LossWeighting
from .metrics import build_compute_metrics, load_metric, metric_path, preprocess_logits_for_metrics
from .model_card import ModelCardInputs, build_model_card
from .modeling_mtl import MultiTaskModel, MultiTaskModelOutput
from .onnx_export import export_onnx
from .onnx_model import OnnxMultiTaskModel
from .packaged_encoder import hub_id_of
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
    "DataArguments",
    "DataSourceConfig",
    "HfMtlError",
    "LossWeighting",
    "MixingStrategy",
    "ModelArguments",
    "ModelCardInputs",
    "MultiTaskConfig",
    "MultiTaskDataCollator",
    "MultiTaskDatasets",
    "MultiTaskModel",
    "MultiTaskModelOutput",
    "MultiTaskPipeline",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "OnnxMultiTaskModel",
    "TaskKind",
    "TaskSpec",
    "build_compute_metrics",
    "build_model_card",
    "export_onnx",
    "hub_id_of",
    "load_metric",
    "load_model_and_tokenizer",
    "load_multitask_datasets",
    "load_tokenizer",
    "metric_path",
    "mix_datasets",
    "parse_args",
    "parse_tasks",
    "preprocess_logits_for_metrics",
    "tokenize_and_align",
]
