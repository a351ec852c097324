#!/usr/bin/env python
"""One joint pipeline against two single-task pipelines, on the same real sentences.

The joint `pipeline("multitask")` runs one MiniLM encoder pass per sentence for sentiment and entities; the pair is
a `text-classification` pipeline plus a `token-classification` pipeline (`aggregation_strategy="first"`), each
over its own model with the same MiniLM encoder. Heads are untrained: speed does not depend on their weights.

    python benchmarks/inference.py            # 2,000 sentences (SST-2 dev + WNUT-17 dev/test), updates docs
    python benchmarks/inference.py --quick    # 200 sentences, one repeat
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, finish  # noqa: E402


def real_sentences(count: int) -> list[str]:
    """SST-2 dev sentences, then WNUT-17 dev and test tweets (words joined by spaces), `count` in all."""
    sst2 = [line.split("\t")[0].strip() for line in (DATA / "sst2_glue" / "dev.tsv").read_text().splitlines()[1:]]
    tweets = []
    for name in ("emerging.dev.conll", "emerging.test.annotated"):
        for block in (DATA / "wnut17" / name).read_text(encoding="utf-8").split("\n\n"):
            words = [line.split("\t")[0] for line in block.splitlines() if line.strip()]
            if words:
                tweets.append(" ".join(words))
    return (sst2 + tweets)[:count]


def timed(function, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 sentences, one timed repeat")
    parser.add_argument("--sentences", type=int, default=None, help="default 2000 (quick: 200)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats after a warm-up (default 3)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output", type=Path, default=None, help="results JSON")
    parser.add_argument("--docs", type=Path, default=None, help="markdown to update (default docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)
    if not (DATA / "sst2_glue" / "dev.tsv").is_file() or not (DATA / "wnut17" / "emerging.dev.conll").is_file():
        print(f"SKIPPED: the real corpora are not available ({DATA} is missing); they live in ../shared/data")
        return 0

    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        pipeline,
    )
    from transformers.utils import logging as hf_logging

    import hf_mtl
    from hf_mtl.packaged_encoder import MINILM, resolve_encoder

    hf_logging.set_verbosity_error()
    count = args.sentences or (200 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    texts = real_sentences(count)
    encoder = resolve_encoder(MINILM.hub_id)
    tokenizer = hf_mtl.load_tokenizer(encoder)
    tasks = hf_mtl.parse_tasks(None)
    ner = tasks[1]
    torch.manual_seed(0)
    joint = pipeline("multitask", model=hf_mtl.MultiTaskModel.from_encoder(encoder).eval(), tokenizer=tokenizer)
    sentiment = pipeline(
        "text-classification",
        model=AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=2).eval(),
        tokenizer=tokenizer,
    )
    entities = pipeline(
        "token-classification",
        model=AutoModelForTokenClassification.from_pretrained(
            encoder, id2label=dict(enumerate(ner.labels)), label2id=ner.label2id
        ).eval(),
        tokenizer=tokenizer,
        aggregation_strategy="first",
    )
    batch = args.batch_size

    def run_joint():
        return joint(texts, batch_size=batch)

    def run_pair():
        return sentiment(texts, batch_size=batch), entities(texts, batch_size=batch)

    with torch.inference_mode():
        run_joint(), run_pair()  # warm-up
        joint_seconds = timed(run_joint, repeats)
        pair_seconds = timed(run_pair, repeats)
    joint_rate = [len(texts) / s for s in joint_seconds]
    pair_rate = [len(texts) / s for s in pair_seconds]
    ratio = statistics.median(joint_rate) / statistics.median(pair_rate)
    results = {
        "command": "python benchmarks/inference.py" + (" --quick" if args.quick else ""),
        "date": time.strftime("%Y-%m-%d"),
        "sentences": len(texts),
        "batch_size": batch,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "joint_sentences_per_second": {
            "min": min(joint_rate),
            "median": statistics.median(joint_rate),
            "max": max(joint_rate),
        },
        "pair_sentences_per_second": {
            "min": min(pair_rate),
            "median": statistics.median(pair_rate),
            "max": max(pair_rate),
        },
        "ratio_joint_over_pair": ratio,
    }
    table = "\n".join(
        [
            f"Command: `{results['command']}` ({results['date']}, {results['threads']} threads, "
            f"{len(texts)} sentences: SST-2 dev then WNUT-17 dev/test, batch {batch}, "
            f"median of {repeats} timed passes after a warm-up).",
            "",
            "| pipeline | sentences/s (min / median / max) |",
            "|---|---|",
            "| joint `multitask` (one encoder pass) | "
            + " / ".join(f"{results['joint_sentences_per_second'][k]:.1f}" for k in ("min", "median", "max"))
            + " |",
            "| `text-classification` + `token-classification` | "
            + " / ".join(f"{results['pair_sentences_per_second'][k]:.1f}" for k in ("min", "median", "max"))
            + " |",
            "",
            f"Joint / pair: **{ratio:.2f}×** (target ≥ 1.8×: {'met' if ratio >= 1.8 else 'missed'}).",
        ]
    )
    return finish(args, results, table, "inference", "Inference: joint pipeline vs two single-task pipelines")


if __name__ == "__main__":
    sys.exit(main())
