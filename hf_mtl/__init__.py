"""hf_mtl: multi-task learning (sentence and token tasks on one shared encoder) for the Hugging Face Trainer."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, AutoModel

from .configuration_mtl import MultiTaskConfig
from .errors import HfMtlError
from .modeling_mtl import MultiTaskModel, MultiTaskModelOutput
from .pipeline import MultiTaskPipeline, register_pipeline
from .tasks import DEFAULT_TASKS, TaskKind, TaskSpec, parse_tasks

# The rest loads on first use (PEP 562), as transformers' own `_LazyModule` does: a process that only serves a
# model (the `multitask` pipeline) does not import the Trainer, `datasets`, `evaluate` or `onnx`.
_LAZY_MODULES = {
    "DataArguments": ".arguments",
    "ModelArguments": ".arguments",
    "MultiTaskTrainingArguments": ".arguments",
    "parse_args": ".arguments",
    "DataSourceConfig": ".data",
    "MixingStrategy": ".data",
    "MultiTaskDataCollator": ".data",
    "mix_datasets": ".data",
    "tokenize_and_align": ".data",
    "MultiTaskDatasets": ".data.multitask_datasets",
    "load_multitask_datasets": ".data.multitask_datasets",
    "load_model_and_tokenizer": ".loading",
    "LossWeighting": ".loss_weighting",
    "build_compute_metrics": ".metrics",
    "load_metric": ".metrics",
    "metric_path": ".metrics",
    "preprocess_logits_for_metrics": ".metrics",
    "ModelCardInputs": ".model_card",
    "build_model_card": ".model_card",
    "export_onnx": ".onnx_export",
    "PerTaskAdamW": ".optimization",
    "OnnxMultiTaskModel": ".onnx_model",
    "hub_id_of": ".packaged_encoder",
    "load_tokenizer": ".tokenization",
    "MultiTaskTrainer": ".trainer",
}

if TYPE_CHECKING:
    from .arguments import DataArguments, ModelArguments, MultiTaskTrainingArguments, parse_args
    from .data import DataSourceConfig, MixingStrategy, MultiTaskDataCollator, mix_datasets, tokenize_and_align
    from .data.multitask_datasets import MultiTaskDatasets, load_multitask_datasets
    from .loading import load_model_and_tokenizer
    from .loss_weighting import LossWeighting
    from .metrics import build_compute_metrics, load_metric, metric_path, preprocess_logits_for_metrics
    from .model_card import ModelCardInputs, build_model_card
    from .onnx_export import export_onnx
    from .onnx_model import OnnxMultiTaskModel
    from .optimization import PerTaskAdamW
    from .packaged_encoder import hub_id_of
    from .tokenization import load_tokenizer
    from .trainer import MultiTaskTrainer


def __getattr__(name: str) -> Any:
    if name not in _LAZY_MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_MODULES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_MODULES))


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
    "PerTaskAdamW",
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
