#!/usr/bin/env python
"""Train, evaluate and predict with a multi-task model (one shared encoder, a head per task) on the CPU.

    python run_mtl.py configs/demo.yaml                      # a YAML or JSON file as the base
    python run_mtl.py configs/demo.yaml --num_train_epochs 2 # flags override the file
    python run_mtl.py --config configs/demo.yaml --do_predict

Every `TrainingArguments` flag works, plus the model and data arguments of `hf_mtl.arguments`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import datasets
import transformers
import yaml
from datasets import Dataset
from transformers import EarlyStoppingCallback, HfArgumentParser, set_seed
from transformers.hf_argparser import string_to_bool
from transformers.trainer_utils import get_last_checkpoint

import hf_mtl
from hf_mtl.arguments import DataArguments, ModelArguments, MultiTaskTrainingArguments
from hf_mtl.configuration_mtl import saved_multitask_config
from hf_mtl.data import mix_datasets, tokenize_and_align
from hf_mtl.data.sources import LoadedSource, load_source, parse_sources, restrict_to_tasks
from hf_mtl.errors import HfMtlError
from hf_mtl.metrics import best_per_task, build_compute_metrics, merge_dataset_metrics, preprocess_logits_for_metrics
from hf_mtl.model_card import ModelCardInputs, build_model_card, non_default_arguments
from hf_mtl.modeling_mtl import MultiTaskModel
from hf_mtl.packaged_encoder import resolve_encoder
from hf_mtl.pipeline import MultiTaskPipeline
from hf_mtl.plots import plot_training_curves
from hf_mtl.predictions import write_predictions
from hf_mtl.raw_text import read_texts, write_text_predictions
from hf_mtl.tasks import TaskSpec, parse_tasks
from hf_mtl.tokenization import load_tokenizer
from hf_mtl.trainer import MultiTaskTrainer

logger = logging.getLogger("run_mtl")
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


class ArgumentParser(HfArgumentParser):
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
    parser = ArgumentParser(ARGUMENT_CLASSES, allow_abbrev=False)
    if config_path is not None:
        parser.set_defaults(**load_config_file(config_path))
    model_args, data_args, training_args, unknown = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    if unknown:
        raise HfMtlError(f"unknown argument(s) {unknown}; see `python run_mtl.py --help`")
    return model_args, data_args, training_args


def resolve_tasks(model_args: ModelArguments) -> tuple[list[TaskSpec], bool]:
    """The tasks to train, and whether `model_name_or_path` is a saved hf_mtl model, by Hub id or folder (its tasks
    win)."""
    name = model_args.model_name_or_path
    try:
        saved = saved_multitask_config(resolve_encoder(name))
    except HfMtlError:
        raise
    except (OSError, ValueError, KeyError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise HfMtlError(f"--model_name_or_path {name}: cannot load ({first_line})") from err
    if saved is None:
        return parse_tasks(model_args.tasks, where="--tasks"), False
    if model_args.tasks is not None and parse_tasks(model_args.tasks) != saved.task_specs:
        raise HfMtlError(
            f"{name}: the saved model's tasks {saved.tasks} differ from --tasks; drop --tasks or start from an encoder"
        )
    return saved.task_specs, True


def refuse_pickled_weights(path: str, allowed: bool) -> None:
    """A local folder whose only weights are pickled (`.bin`, `.pt`, `.pth`) is refused unless the user opts in:
    unpickling can run arbitrary code, safetensors cannot."""
    folder = Path(path)
    if allowed or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(
        p for pattern in ("*.bin", "*.pt", "*.pth") for p in folder.glob(pattern) if p.name != "training_args.bin"
    )
    if pickled:
        raise HfMtlError(
            f"{pickled[0]}: pickled weights are not loaded (unpickling can run code); convert them to safetensors "
            "or pass --allow_pickled_weights"
        )


def load_tokenizer_and_model(
    model_args: ModelArguments, tasks: list[TaskSpec], from_saved_model: bool, loss_weighting: str = "static"
) -> tuple[transformers.PreTrainedTokenizerBase, MultiTaskModel]:
    """The tokenizer and the model: a saved hf_mtl model as it is, or new heads on a pretrained encoder."""
    model_path = resolve_encoder(model_args.model_name_or_path)
    tokenizer_path = resolve_encoder(model_args.tokenizer_name or model_args.model_name_or_path)
    refuse_pickled_weights(model_path, model_args.allow_pickled_weights)
    try:
        tokenizer = load_tokenizer(tokenizer_path)
        if from_saved_model:
            return tokenizer, MultiTaskModel.from_pretrained(model_path)
        model = MultiTaskModel.from_encoder(
            model_path,
            [task.to_dict() for task in tasks],
            classifier_dropout=model_args.classifier_dropout,
            sentence_pooling=model_args.sentence_pooling,
            loss_weighting=getattr(loss_weighting, "value", loss_weighting),
        )
    except HfMtlError:
        raise
    except (OSError, ValueError, KeyError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise HfMtlError(f"--model_name_or_path {model_args.model_name_or_path}: cannot load ({first_line})") from err
    return tokenizer, model


def check_output_dir(training_args: MultiTaskTrainingArguments) -> str | None:
    """The checkpoint to resume from; refuses to train into a non-empty folder unless asked to."""
    output_dir = Path(training_args.output_dir)
    if not training_args.do_train or not output_dir.is_dir() or not any(output_dir.iterdir()):
        return training_args.resume_from_checkpoint
    last_checkpoint = get_last_checkpoint(str(output_dir))
    if training_args.resume_from_checkpoint is not None or training_args.overwrite_output_dir:
        return training_args.resume_from_checkpoint
    if last_checkpoint is not None:
        logger.info("Resuming from %s; pass --overwrite_output_dir to start over", last_checkpoint)
        return last_checkpoint
    raise HfMtlError(f"--output_dir {output_dir} already holds files; pass --overwrite_output_dir or another folder")


def tokenized_split(
    loaded: list[LoadedSource],
    split: str,
    tokenizer,
    tasks: list[TaskSpec],
    data_args: DataArguments,
    limit: int | None,
) -> dict[str, Dataset]:
    out = {}
    for source in loaded:
        if split not in source.splits:
            continue
        rows = source.splits[split]
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
            source.splits[split] = rows
        out[source.config.name] = tokenize_and_align(
            rows,
            tokenizer,
            tasks,
            data_args.max_seq_length,
            data_args.preprocessing_num_workers,
            desc=f"Tokenising {source.config.name}/{split}",
        )
    return out


def predict_raw_text(model_args, training_args, tasks, from_saved_model, texts: list[str]) -> dict[str, float]:
    """Labels the sentences of `--predict_file` with a trained model, without touching any data set."""
    if not from_saved_model:
        raise HfMtlError("--predict_file without --do_train needs --model_name_or_path to be a trained hf_mtl model")
    tokenizer, model = load_tokenizer_and_model(model_args, tasks, from_saved_model, training_args.loss_weighting)
    pipe = MultiTaskPipeline(model=model.eval(), tokenizer=tokenizer, device=training_args.device)
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "text_predictions.jsonl"
    write_text_predictions(pipe, texts, path, training_args.per_device_eval_batch_size)
    logger.info("Predictions for %d sentences written to %s", len(texts), path)
    return {"predict_samples": len(texts)}


def predict_each(
    trainer: MultiTaskTrainer, tests: dict[str, Dataset], tasks: list[TaskSpec]
) -> tuple[dict[str, float], dict[str, dict]]:
    """Predicts each corpus's test split; metrics as `evaluate` gives them (prefixed per corpus when several)."""
    metrics: dict[str, float] = {}
    predictions = {}
    for name, dataset in tests.items():
        prefix = "test" if len(tests) == 1 else f"test_{name}"
        output = trainer.predict(dataset, metric_key_prefix=prefix)
        metrics.update(output.metrics)
        predictions[name] = output.predictions
    if len(tests) > 1:
        metrics.update(merge_dataset_metrics(metrics, "test", list(tests), tasks))
    metrics["test_samples"] = sum(len(dataset) for dataset in tests.values())
    return metrics, predictions


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Runs `run_mtl.py` with `argv` (default: `sys.argv[1:]`); returns all final metrics."""
    model_args, data_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    return run(model_args, data_args, training_args)


def run(model_args: ModelArguments, data_args: DataArguments, training_args: MultiTaskTrainingArguments) -> dict:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    log_level = training_args.get_process_log_level()
    for library_logger in (logger, logging.getLogger("hf_mtl")):
        library_logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)

    # Everything a bad flag or file can break is checked before the first write to output_dir.
    tasks, from_saved_model = resolve_tasks(model_args)
    if data_args.predict_file is not None and not training_args.do_predict:
        raise HfMtlError("--predict_file is read by --do_predict; add --do_predict")
    texts = read_texts(data_args.predict_file) if data_args.predict_file is not None else None
    if texts is not None and not (training_args.do_train or training_args.do_eval):
        return predict_raw_text(model_args, training_args, tasks, from_saved_model, texts)
    entries = data_args.datasets
    if model_args.only_tasks is not None:
        if from_saved_model:
            raise HfMtlError("--only_tasks: start from an encoder, not from a saved hf_mtl model with all its heads")
        tasks, entries = restrict_to_tasks(tasks, entries, model_args.only_tasks)
    sources = parse_sources(entries, tasks, where="--datasets")
    resume_from = check_output_dir(training_args)
    loaded = [load_source(source, tasks) for source in sources]
    set_seed(training_args.seed)

    tokenizer, model = load_tokenizer_and_model(model_args, tasks, from_saved_model, training_args.loss_weighting)

    limit = min(tokenizer.model_max_length, getattr(model.config.encoder, "max_position_embeddings", 10**6))
    if data_args.max_seq_length > limit:
        logger.warning(
            "--max_seq_length %d exceeds the model's maximum %d; using %d", data_args.max_seq_length, limit, limit
        )
        data_args.max_seq_length = limit
    # Saved with the model: the pipeline truncates (or windows) texts at the length the model was trained with.
    if training_args.do_train:
        model.config.max_seq_length = data_args.max_seq_length
    train = tokenized_split(loaded, "train", tokenizer, tasks, data_args, data_args.max_train_samples)
    evals = tokenized_split(loaded, "validation", tokenizer, tasks, data_args, data_args.max_eval_samples)
    tests = tokenized_split(loaded, "test", tokenizer, tasks, data_args, data_args.max_predict_samples)
    for flag, split, needed in (
        ("--do_train", "train", train),
        ("--do_eval", "validation", evals),
        ("--do_predict", "test", tests),
    ):
        if getattr(training_args, flag[2:]) and not needed and not (flag == "--do_predict" and texts is not None):
            raise HfMtlError(f"{flag}: no data set has a {split} split")

    train_dataset = None
    if training_args.do_train:
        train_dataset = mix_datasets(
            train,
            data_args.mixing_strategy,
            data_args.mixing_temperature,
            training_args.seed,
            data_args.stopping_strategy,
        )
        logger.info("Training on %d rows mixed from %s", len(train_dataset), {k: len(v) for k, v in train.items()})
    # One evaluation set per corpus: metrics come prefixed per corpus (eval_sst2_sentiment_accuracy) and merged per
    # task, each task measured on the corpus that labels it.
    eval_dataset = (next(iter(evals.values())) if len(evals) == 1 else evals) if evals else None

    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if training_args.eval_strategy != "no" or training_args.do_eval else None,
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tasks),
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        callbacks=[EarlyStoppingCallback(training_args.early_stopping_patience)]
        if training_args.early_stopping_patience
        else None,
    )

    all_metrics: dict[str, float] = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=resume_from)
        trainer.save_model()
        metrics = {**result.metrics, "train_samples": len(train_dataset)}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        all_metrics.update(metrics)
        best = best_per_task(trainer.state.log_history, tasks)
        if best and trainer.is_world_process_zero():
            (Path(training_args.output_dir) / "best_per_task.json").write_text(json.dumps(best, indent=2) + "\n")
    if training_args.do_eval:
        metrics = {**trainer.evaluate(eval_dataset), "eval_samples": sum(len(d) for d in evals.values())}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        all_metrics.update(metrics)
    if training_args.do_predict and texts is not None:
        if trainer.is_world_process_zero():
            pipe = MultiTaskPipeline(model=trainer.model, tokenizer=tokenizer, device=training_args.device)
            path = Path(training_args.output_dir) / "text_predictions.jsonl"
            write_text_predictions(pipe, texts, path, training_args.per_device_eval_batch_size)
            logger.info("Predictions for %d sentences written to %s", len(texts), path)
    elif training_args.do_predict:
        metrics, predictions = predict_each(trainer, tests, tasks)
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
        all_metrics.update(metrics)
        if trainer.is_world_process_zero():
            path = Path(training_args.output_dir) / "predictions.jsonl"
            write_predictions(path, loaded, predictions, tokenizer, tasks, data_args.max_seq_length)
            logger.info("Predictions written to %s", path)
    if trainer.is_world_process_zero() and (training_args.do_eval or training_args.do_predict):
        trainer.save_metrics("all", all_metrics, combined=True)

    if training_args.do_train and trainer.is_world_process_zero():
        write_card(trainer, model_args, data_args, training_args, sources, tasks, all_metrics)
    return all_metrics


def write_card(trainer, model_args, data_args, training_args, sources, tasks, metrics) -> None:
    import huggingface_hub
    import torch

    base_model = model_args.model_name_or_path
    if Path(base_model).exists():  # a local folder is no Hub id: say nothing rather than something wrong
        base_model = None
    curves = "training_curves.png"
    has_curves = plot_training_curves(trainer.state.log_history, tasks, Path(training_args.output_dir) / curves)
    inputs = ModelCardInputs(
        model_name=Path(training_args.output_dir).name,
        tasks=tasks,
        base_model=base_model,
        sources=sources,
        metrics=metrics,
        log_history=trainer.state.log_history,
        hyperparameters=non_default_arguments(training_args),
        license=model_args.model_card_license,
        mixing=str(data_args.mixing_strategy.value),
        max_seq_length=data_args.max_seq_length,
        curves_file=curves if has_curves else None,
        loss_weighting=str(training_args.loss_weighting.value),
        best_per_task=best_per_task(trainer.state.log_history, tasks),
        sentence_pooling=trainer.model.config.sentence_pooling,
        encoder_pooler=trainer.model.config.encoder_pooler,
        versions={
            "hf_mtl": hf_mtl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "datasets": datasets.__version__,
            "huggingface_hub": huggingface_hub.__version__,
        },
    )
    card = build_model_card(inputs, model_path=training_args.hub_model_id or training_args.output_dir)
    card.save(os.path.join(training_args.output_dir, "README.md"))
    logger.info("Model card written to %s", os.path.join(training_args.output_dir, "README.md"))


def cli() -> int:
    debug = "--debug" in sys.argv
    argv = [arg for arg in sys.argv[1:] if arg != "--debug"]
    try:
        main(argv)
    except HfMtlError as err:
        if debug:
            raise
        print(f"run_mtl.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
