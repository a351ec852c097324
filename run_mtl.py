#!/usr/bin/env python
"""Train, evaluate and predict with a multi-task model (one shared encoder, a head per task) on the CPU.

    python run_mtl.py configs/demo.yaml                      # a YAML or JSON file as the base
    python run_mtl.py configs/demo.yaml --num_train_epochs 2 # flags override the file
    python run_mtl.py --config configs/demo.yaml --do_predict

Every `TrainingArguments` flag works, plus the model and data arguments of `hf_mtl.arguments`. The script is a thin
layer over the library, as `run_ner.py` is over transformers.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import datasets
import torch
import transformers
from transformers import EarlyStoppingCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

import hf_mtl
from hf_mtl.arguments import DataArguments, ModelArguments, MultiTaskTrainingArguments, parse_args
from hf_mtl.data.multitask_datasets import check_splits
from hf_mtl.data.sources import parse_sources, restrict_to_tasks
from hf_mtl.loading import resolve_tasks
from hf_mtl.predictions import write_predictions
from hf_mtl.raw_text import label_texts, read_texts

logger = logging.getLogger("run_mtl")
__all__ = ["main", "parse_args", "run"]


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
    raise hf_mtl.HfMtlError(
        f"--output_dir {output_dir} already holds files; pass --overwrite_output_dir or another folder"
    )


def load_model_and_tokenizer(model_args: ModelArguments, training_args: MultiTaskTrainingArguments, tasks):
    return hf_mtl.load_model_and_tokenizer(
        model_args.model_name_or_path,
        tasks,
        tokenizer_name=model_args.tokenizer_name,
        allow_pickled_weights=model_args.allow_pickled_weights,
        classifier_dropout=model_args.classifier_dropout,
        sentence_pooling=model_args.sentence_pooling,
        task_specific_layers=model_args.task_specific_layers,
        head_hidden_layers=model_args.head_hidden_layers,
        loss_weighting=training_args.loss_weighting.value,
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Runs `run_mtl.py` with `argv` (default: `sys.argv[1:]`); returns all final metrics."""
    return run(*parse_args(sys.argv[1:] if argv is None else argv))


def run(model_args: ModelArguments, data_args: DataArguments, training_args: MultiTaskTrainingArguments) -> dict:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    log_level = training_args.get_process_log_level()
    for library_logger in (logger, logging.getLogger("hf_mtl")):
        library_logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)

    # Everything a bad flag or file can break is checked before the first write to output_dir.
    tasks, from_saved_model = resolve_tasks(model_args.model_name_or_path, model_args.tasks)
    if data_args.predict_file is not None and not training_args.do_predict:
        raise hf_mtl.HfMtlError("--predict_file is read by --do_predict; add --do_predict")
    texts = read_texts(data_args.predict_file) if data_args.predict_file is not None else None
    if texts is not None and not (training_args.do_train or training_args.do_eval):
        if not from_saved_model:
            raise hf_mtl.HfMtlError(
                "--predict_file without --do_train needs --model_name_or_path to be a trained hf_mtl model"
            )
        return label_texts(
            *load_model_and_tokenizer(model_args, training_args, tasks), texts, training_args.output_dir
        )
    entries = data_args.datasets
    if model_args.only_tasks is not None:
        if from_saved_model:
            raise hf_mtl.HfMtlError("--only_tasks: start from an encoder, not from a saved hf_mtl model")
        tasks, entries = restrict_to_tasks(tasks, entries, model_args.only_tasks)
    sources = parse_sources(entries, tasks, where="--datasets")
    if data_args.streaming and training_args.do_train and training_args.max_steps <= 0:
        raise hf_mtl.HfMtlError("--streaming: a stream has no length; set --max_steps")
    resume_from = check_output_dir(training_args)
    set_seed(training_args.seed)
    model, tokenizer = load_model_and_tokenizer(model_args, training_args, tasks)

    limit = min(tokenizer.model_max_length, getattr(model.config.encoder, "max_position_embeddings", 10**6))
    if data_args.max_seq_length > limit:
        logger.warning(
            "--max_seq_length %d exceeds the model's maximum %d; using %d", data_args.max_seq_length, limit, limit
        )
        data_args.max_seq_length = limit
    if training_args.do_train:  # the pipeline truncates (or windows) texts at the length the model was trained with
        model.config.max_seq_length = data_args.max_seq_length
    data = hf_mtl.load_multitask_datasets(
        sources, tokenizer, tasks, data_args.max_seq_length, data_args.mixing_strategy, data_args.mixing_temperature,
        data_args.stopping_strategy, training_args.seed, data_args.max_train_samples, data_args.max_eval_samples,
        data_args.max_predict_samples, data_args.preprocessing_num_workers, streaming=data_args.streaming,
    )  # fmt: skip
    check_splits(data, training_args.do_train, training_args.do_eval, training_args.do_predict and texts is None)
    trainer = hf_mtl.MultiTaskTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train if training_args.do_train else None,
        eval_dataset=data.eval_dataset if training_args.eval_strategy != "no" or training_args.do_eval else None,
        processing_class=tokenizer,
        compute_metrics=hf_mtl.build_compute_metrics(tasks),
        preprocess_logits_for_metrics=hf_mtl.preprocess_logits_for_metrics,
        callbacks=[EarlyStoppingCallback(training_args.early_stopping_patience)]
        if training_args.early_stopping_patience
        else None,
    )

    all_metrics: dict[str, float] = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=resume_from)
        trainer.save_model(_internal_call=True)  # saved here, pushed once at the end with the card
        seen = result.global_step * training_args.train_batch_size * training_args.gradient_accumulation_steps
        metrics = {**result.metrics, "train_samples": seen if data_args.streaming else len(trainer.train_dataset)}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        all_metrics.update(metrics)
    if training_args.do_eval:
        metrics = {
            **trainer.evaluate(data.eval_dataset),
            "eval_samples": sum(len(d) for d in data.validation.values()),
        }
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        all_metrics.update(metrics)
    if training_args.do_predict and texts is not None:
        if trainer.is_world_process_zero():
            batch_size = training_args.per_device_eval_batch_size
            all_metrics.update(label_texts(trainer.model, tokenizer, texts, training_args.output_dir, batch_size))
    elif training_args.do_predict:
        output = trainer.predict(data.test)
        trainer.log_metrics("test", output.metrics)
        trainer.save_metrics("test", output.metrics)
        all_metrics.update(output.metrics)
        if trainer.is_world_process_zero():
            path = Path(training_args.output_dir) / "predictions.jsonl"
            write_predictions(path, data.sources, output.predictions, tokenizer, tasks, data_args.max_seq_length)
            logger.info("Predictions written to %s", path)
    if trainer.is_world_process_zero() and (training_args.do_eval or training_args.do_predict):
        trainer.save_metrics("all", all_metrics, combined=True)

    if training_args.do_train:
        card = {
            "language": model_args.model_card_language,
            "license": model_args.model_card_license,
            "finetuned_from": hf_mtl.hub_id_of(model_args.model_name_or_path),
            "sources": data.source_configs,
            "example_text": data.example_text(),
            "mixing": data_args.mixing_strategy.value if len(data.source_configs) > 1 else None,
        }
        if training_args.push_to_hub:
            trainer.push_to_hub(**card)  # model, tokenizer, curves and the hf_mtl card, in one commit
        else:
            trainer.create_model_card(**card)
    return all_metrics


def cli() -> int:
    debug = "--debug" in sys.argv
    argv = [arg for arg in sys.argv[1:] if arg != "--debug"]
    try:
        main(argv)
    except hf_mtl.HfMtlError as err:
        if debug:
            raise
        print(f"run_mtl.py: error: {err}", file=sys.stderr)
        return 2
    # Under torchrun, tear the process group down before the interpreter exits: left to the destructors at exit, a
    # gloo worker thread can abort the process ("terminate called without an active exception", pytorch#190489).
    # Only after a run that succeeded, as torchtitan does: after a failure on one rank the others may still wait.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
