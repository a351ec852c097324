#!/usr/bin/env python
"""Evaluation speed: `MultiTaskTrainer.evaluate` with rows longest first (`eval_sort_by_length`, the default)
against the data's order, on the same model and sets, in one process.

The packaged MiniLM with the SST-2 + WNUT-17 tasks of `configs/sst2_wnut17.yaml` (heads untrained, seed 0: speed
does not depend on their weights), batch 64, fp32. The sets: SST-2 dev (872 sentences), WNUT-17 dev (1,009 tweets)
and WNUT-17 test (1,287 tweets). Each round evaluates every set in both orders, alternating which goes first; the
figures are the median seconds over the rounds, the padded positions of each order's batches over the set's real
tokens, and whether both orders gave the same scores (each metric to 1e-9, each task's loss to 1e-5).

    python benchmarks/evaluation.py            # 3 rounds, updates docs/BENCHMARKS.md (about 3 minutes on 2 cores)
    python benchmarks/evaluation.py --quick    # 64 rows per set, batch 16, one round
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, NEEDED, ROOT, cpu_name, finish  # noqa: E402

CONFIG = ROOT / "configs" / "sst2_wnut17.yaml"


def padded_positions(trainer, dataset) -> tuple[int, int]:
    """(positions in the evaluation batches, real tokens) over the set."""
    padded = real = 0
    for batch in trainer.get_eval_dataloader(dataset):
        padded += batch["attention_mask"].numel()
        real += int(batch["attention_mask"].sum())
    return padded, real


def same_scores(mine: dict, theirs: dict) -> bool:
    for key, value in theirs.items():
        # The Trainer's `eval_loss` averages each batch's mean loss, so it depends on the batches; each task's loss
        # (`eval_ner_loss`) is a mean over the set's labelled positions.
        if key == "eval_loss" or key.endswith(("_runtime", "_per_second", "_time")) or not isinstance(value, float):
            continue
        tolerance = 1e-5 * max(1.0, abs(value)) if key.endswith("_loss") else 1e-9
        if abs(mine[key] - value) > tolerance:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 rows per set, batch 16, one round")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--batch_size", type=int, default=None, help="default 64 (quick: 16)")
    parser.add_argument("--output", type=Path, default=None, help="results JSON")
    parser.add_argument("--docs", type=Path, default=None, help="markdown to update (default docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)
    missing = [name for name in NEEDED if not (DATA / name).is_file()]
    if missing:
        print(f"SKIPPED: the real corpora are not available ({DATA / missing[0]} is missing); they live in "
              "../shared/data beside the repository")  # fmt: skip
        return 0

    import torch

    import hf_mtl
    from hf_mtl.arguments import MultiTaskTrainingArguments
    from hf_mtl.packaged_encoder import resolve_encoder

    config = yaml.safe_load(CONFIG.read_text())
    sources = yaml.safe_load(yaml.safe_dump(config["datasets"]).replace("../shared/data", str(DATA)))
    tasks = hf_mtl.parse_tasks(config["tasks"])
    encoder = resolve_encoder(config["model_name_or_path"])
    tokenizer = hf_mtl.load_tokenizer(encoder)
    rows = 64 if args.quick else None
    data = hf_mtl.load_multitask_datasets(
        sources, tokenizer, tasks, max_eval_samples=rows, max_predict_samples=rows, max_train_samples=64
    )
    sets = {f"{name} dev": dataset for name, dataset in data.validation.items()}
    sets.update({f"{name} test": dataset for name, dataset in data.test.items()})
    torch.manual_seed(0)
    model = hf_mtl.MultiTaskModel.from_encoder(encoder, tasks=config["tasks"], encoder_kwargs={"dtype": torch.float32})

    rounds = args.rounds or (1 if args.quick else 3)
    batch_size = args.batch_size or (16 if args.quick else 64)
    with tempfile.TemporaryDirectory() as folder:
        trainers = {
            sort: hf_mtl.MultiTaskTrainer(
                model=model,
                args=MultiTaskTrainingArguments(
                    folder,
                    per_device_eval_batch_size=batch_size,
                    eval_sort_by_length=sort,
                    bf16=False,
                    report_to="none",
                    disable_tqdm=True,
                ),  # fmt: skip
                processing_class=tokenizer,
                compute_metrics=hf_mtl.build_compute_metrics(tasks),
                preprocess_logits_for_metrics=hf_mtl.preprocess_logits_for_metrics,
            )
            for sort in (False, True)
        }
        results = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "rounds": rounds, "batch_size": batch_size}
        results["sets"] = {}
        for name, dataset in sets.items():
            seconds = {False: [], True: []}
            metrics = {}
            for round_index in range(rounds):
                for sort in (False, True) if round_index % 2 == 0 else (True, False):
                    metrics[sort] = trainers[sort].evaluate(dataset)
                    seconds[sort].append(metrics[sort]["eval_runtime"])
            positions = {sort: padded_positions(trainers[sort], dataset) for sort in (False, True)}
            row = {
                "rows": len(dataset),
                "seconds_in_order": statistics.median(seconds[False]),
                "seconds_longest_first": statistics.median(seconds[True]),
                "padding_in_order": positions[False][0] / positions[False][1] - 1,
                "padding_longest_first": positions[True][0] / positions[True][1] - 1,
                "same_scores": same_scores(metrics[True], metrics[False]),
            }
            row["speedup"] = row["seconds_in_order"] / row["seconds_longest_first"]
            results["sets"][name] = row
            print(name, row, flush=True)
    if not all(row["same_scores"] for row in results["sets"].values()):
        raise SystemExit("evaluation longest first gave other scores than in the data's order")
    return finish(args, results, report(results, args), "evaluation", "Evaluation speed: rows longest first")


def report(results: dict, args) -> str:
    command = "python benchmarks/evaluation.py" + (" --quick" if args.quick else "")
    lines = [
        f"Command: `{command}` ({results['cpu']}, {results['threads']} threads; median of {results['rounds']} "
        f"rounds). `MultiTaskTrainer.evaluate`, MiniLM, batch {results['batch_size']}, fp32; padding is the padded "
        "positions over the real tokens.",
        "",
        "| set | rows | data's order (s) | longest first (s) | speed-up | padding, data's order | padding, longest "
        "first | same scores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["sets"].items():
        lines.append(
            f"| {name} | {row['rows']} | {row['seconds_in_order']:.2f} | {row['seconds_longest_first']:.2f} | "
            f"{row['speedup']:.2f}× | {row['padding_in_order']:.0%} | {row['padding_longest_first']:.0%} | "
            f"{'yes' if row['same_scores'] else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
