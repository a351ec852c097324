"""Hub-style model cards from the training run: `ModelCardData` and one `EvalResult` per task for the model-index,
rendered from a template with `huggingface_hub.ModelCard`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .data.sources import DEMO_DATASET, DataSourceConfig
from .metrics import primary_metric
from .packaged_encoder import PACKAGED_ENCODERS
from .tasks import TaskSpec

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card_template.md"
_HUB_TASK_TYPES = {"sequence_classification": "text-classification", "token_classification": "token-classification"}
_LOG_SKIP = {"epoch", "step", "learning_rate", "grad_norm", "total_flos", "num_input_tokens_seen"}
# Arguments that describe the machine or the run's paths, not the training recipe.
_ARGS_SKIP = {"output_dir", "logging_dir", "run_name", "overwrite_output_dir", "do_train", "do_eval", "do_predict"}


@dataclass
class ModelCardInputs:
    """What the card says, gathered by `run_mtl.py` (or by hand) after training."""

    model_name: str
    tasks: list[TaskSpec]
    base_model: str | None
    sources: list[DataSourceConfig]
    metrics: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    mixing: str | None = None
    max_seq_length: int = 128
    versions: dict[str, str] = field(default_factory=dict)
    curves_file: str | None = None
    loss_weighting: str = "static"
    best_per_task: dict[str, dict] = field(default_factory=dict)
    sentence_pooling: str = "pooler"
    encoder_pooler: bool | None = None
    language: str | list[str] | None = None
    example_text: str | None = None


def _hub_datasets(sources: list[DataSourceConfig]) -> list[str]:
    return [s.dataset_name for s in sources if s.dataset_name and s.dataset_name != DEMO_DATASET]


def _results(inputs: ModelCardInputs) -> list[dict[str, Any]]:
    """One row per (split, task, metric) present in the final metrics, `eval` before `test`."""
    rows = []
    for split in ("eval", "test"):
        for task in inputs.tasks:
            names = ["accuracy", "macro_f1"] if not task.is_token_task else ["precision", "recall", "f1"]
            for name in names:
                key = f"{split}_{task.name}_{name}"
                if key in inputs.metrics:
                    rows.append(
                        {
                            "split": "validation" if split == "eval" else "test",
                            "task": task.name,
                            "metric": name,
                            "value": inputs.metrics[key],
                            "key": key,
                        }
                    )
    return rows


def _eval_results(inputs: ModelCardInputs) -> list[EvalResult]:
    """The model-index: each task's primary metric, on validation and on test when present."""
    results = []
    for split in ("eval", "test"):
        for task in inputs.tasks:
            key = f"{split}_{primary_metric(task)}"
            if key not in inputs.metrics:
                continue
            # Each task is scored on the corpora that label it.
            labelling = [s for s in inputs.sources if task.name in s.label_columns] or inputs.sources
            dataset_names = [s.name for s in labelling]
            dataset_type = (_hub_datasets(labelling) or dataset_names)[0]
            metric = primary_metric(task)[len(task.name) + 1 :]
            results.append(
                EvalResult(
                    task_type=_HUB_TASK_TYPES[task.kind.value],
                    task_name=task.name,
                    dataset_type=dataset_type,
                    dataset_name=" + ".join(dataset_names),
                    dataset_split="validation" if split == "eval" else "test",
                    metric_type=metric,
                    metric_name=f"{task.name} {metric}",
                    metric_value=float(inputs.metrics[key]),
                )
            )
    return results


def _entity_tables(inputs: ModelCardInputs) -> list[dict[str, Any]]:
    tables = []
    for split in ("eval", "test"):
        for task in inputs.tasks:
            if not task.is_token_task or f"{split}_{task.name}_f1" not in inputs.metrics:
                continue
            prefix = f"{split}_{task.name}_"
            rows = [
                {
                    "type": entity,
                    **{m: inputs.metrics.get(f"{prefix}{entity}_{m}", 0.0) for m in ("precision", "recall", "f1")},
                    "number": int(inputs.metrics.get(f"{prefix}{entity}_number", 0)),
                }
                for entity in task.entity_types
            ]
            tables.append({"task": task.name, "split": "validation" if split == "eval" else "test", "rows": rows})
    return tables


def _training_log(inputs: ModelCardInputs) -> tuple[list[str], list[list[str]]]:
    """Columns: step, epoch, then every loss (combined and per task, train and eval) and each task's metric."""
    wanted = ["loss"] + [f"{t.name}_loss" for t in inputs.tasks] + [f"weight_{t.name}" for t in inputs.tasks]
    wanted += ["grad_cosine", "eval_loss"]
    wanted += [f"eval_{t.name}_loss" for t in inputs.tasks] + [f"eval_{primary_metric(t)}" for t in inputs.tasks]
    by_step: dict[int, dict[str, Any]] = {}
    for entry in inputs.log_history:
        if "step" in entry and any(key in entry for key in wanted):
            row = by_step.setdefault(entry["step"], {"step": entry["step"], "epoch": entry.get("epoch")})
            row.update({key: entry[key] for key in wanted if key in entry})
    columns = [key for key in wanted if any(key in row for row in by_step.values())]
    rows = []
    for step in sorted(by_step):
        row = by_step[step]
        epoch = f"{row['epoch']:.2f}" if row.get("epoch") is not None else ""
        rows.append([str(step), epoch] + [f"{row[key]:.4f}" if key in row else "" for key in columns])
    return ["step", "epoch"] + columns, rows


def _final_weights(inputs: ModelCardInputs) -> dict[str, float]:
    """Each task's loss weight as last logged (static, learned or dynamic)."""
    weights = {}
    for entry in inputs.log_history:
        weights.update({key[len("weight_") :]: value for key, value in entry.items() if key.startswith("weight_")})
    return weights


def build_model_card(inputs: ModelCardInputs, model_path: str) -> ModelCard:
    """Renders the card; `model_path` is what the usage snippet loads (the output folder or a Hub id)."""
    packaged = PACKAGED_ENCODERS.get(inputs.base_model or "")
    license_id = inputs.license or (packaged.license if packaged else None)
    card_data = ModelCardData(
        language=inputs.language,
        license=license_id,
        library_name="transformers",
        tags=["hf_mtl", "multi-task", *sorted({_HUB_TASK_TYPES[t.kind.value] for t in inputs.tasks})],
        base_model=inputs.base_model,
        datasets=_hub_datasets(inputs.sources) or None,
        model_name=inputs.model_name,
        eval_results=_eval_results(inputs) or None,
        widget=[{"text": inputs.example_text}] if inputs.example_text else None,
    )
    log_columns, log_rows = _training_log(inputs)
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=inputs.model_name,
        encoder_description=f"encoder ({inputs.base_model})" if inputs.base_model else "encoder",
        tasks=[task.to_dict() for task in inputs.tasks],
        base_model=inputs.base_model,
        base_model_license=packaged.license if packaged else None,
        base_model_note=(
            f"Loaded from the byte-exact copy in the `{packaged.package.replace('_', '-')}` package, "
            "verified by sha256."
            if packaged
            else None
        ),
        sources=[{"name": s.name, "origin": s.origin, "tasks": list(s.label_columns)} for s in inputs.sources],
        mixing=inputs.mixing if len(inputs.sources) > 1 else None,
        results=_results(inputs),
        entity_tables=_entity_tables(inputs),
        hyperparameters=inputs.hyperparameters,
        log_columns=log_columns,
        log_rows=log_rows,
        model_path=model_path,
        example_text=json.dumps(inputs.example_text or "Your text here.", ensure_ascii=False),
        max_seq_length=inputs.max_seq_length,
        versions=inputs.versions,
        curves_file=inputs.curves_file,
        loss_weighting=inputs.loss_weighting,
        final_weights=_final_weights(inputs),
        best_per_task=inputs.best_per_task,
        sentence_pooling=inputs.sentence_pooling,
        encoder_pooler=inputs.encoder_pooler,
    )


def library_versions() -> dict[str, str]:
    """The versions of hf_mtl and of the libraries a trained model depends on, for the card."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("hf_mtl", "transformers", "torch", "datasets", "huggingface_hub"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def non_default_arguments(args: Any) -> dict[str, Any]:
    """The `TrainingArguments` fields whose value differs from the class default, as in sentence-transformers."""
    defaults = type(args)(output_dir=args.output_dir).to_dict()
    return {
        key: value
        for key, value in args.to_dict().items()
        if key not in _ARGS_SKIP and not key.startswith("_") and defaults.get(key) != value
    }


__all__ = ["ModelCardInputs", "build_model_card", "library_versions", "non_default_arguments"]
