#!/usr/bin/env python
"""Data at scale: loading and tokenising a 1,000,000-row sentiment TSV and a 200,000-sentence CoNLL NER corpus.

Both corpora are generated in a temporary folder (fixed seed; words drawn from a Zipf-like vocabulary, sentences of
4 to 30 words, NER tags in IOB2 spans), in the formats users have. Each measurement runs in a fresh Python process
that first loads the packaged MiniLM tokenizer and model, so that peak RSS is counted above an interpreter that
already holds the model (as a training run does):

- `first`: `load_source` + `tokenize_and_align` of both train splits with an empty `datasets` cache: time, and peak
  RSS (VmHWM) above the RSS after the model was loaded;
- `cached`: the same again, in a new process over the same cache (nothing is re-read or re-tokenised);
- `streaming`: `load_multitask_datasets(streaming=True)` (tokenised lazily, interleaved proportionally to the row
  counts) trained by `MultiTaskTrainer` with MiniLM: time to the first training step (batch 32), then RSS over 100
  steps (12 with `--quick`);
- `before` (with `--before_tree`): the `first` measurement against an older checkout of hf_mtl (a `git worktree`
  of the last commit), whose loader builds Python lists (`Dataset.from_list`) and tokenises in memory.

    python benchmarks/data_scale.py --before_tree /tmp/old_tree   # the full run; writes results/data_scale.json
    python benchmarks/data_scale.py --quick --output /tmp/x.json   # 20k rows + 4k sentences, for CI
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402
from throughput import peak_rss_mib, reset_peak_rss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
FULL_ROWS, FULL_SENTENCES = 1_000_000, 200_000
QUICK_ROWS, QUICK_SENTENCES = 20_000, 4_000
MAX_SEQ_LENGTH = 128
BATCH_SIZE, STREAM_STEPS, QUICK_STREAM_STEPS = 32, 100, 12
TARGETS = {"peak_rss_above_model_mib": 1536.0, "cached_speedup": 10.0, "first_step_s": 10.0, "rss_growth_mib": 64.0}
ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")


def vocabulary(rng: random.Random, size: int = 30_000) -> list[str]:
    """Pronounceable lower-case words of 1 to 4 syllables, most frequent first (drawn with Zipf-like weights)."""
    onsets, vowels, codas = "b c d f g h j k l m n p r s t v w z br st tr pl ch sh".split(), "aeiou", "-nrs"
    syllables = [onset + vowel + coda.strip("-") for onset in onsets for vowel in vowels for coda in codas]
    words = {"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(size * 2)}
    return sorted(sorted(words)[:size], key=len)  # short words first: they are the frequent ones


def generate(folder: Path, rows: int, sentences: int) -> dict[str, Path]:
    """Writes `sentiment.tsv` (sentence, label 0/1) and `ner.conll` (word, IOB2 tag) into `folder`."""
    rng = random.Random(SEED)
    words = vocabulary(rng)
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))
    names = [word.capitalize() for word in words[:2000]]
    tsv, conll = folder / "sentiment.tsv", folder / "ner.conll"
    with tsv.open("w") as handle:
        handle.write("sentence\tlabel\n")
        for _ in range(rows):
            sentence = " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(4, 30)))
            handle.write(f"{sentence}\t{rng.randint(0, 1)}\n")
    with conll.open("w") as handle:
        for _ in range(sentences):
            length = rng.randint(4, 30)
            tokens = rng.choices(words, cum_weights=cumulative, k=length)
            tags = ["O"] * length
            for _ in range(rng.randint(0, 3)):
                start, span, kind = rng.randrange(length), rng.randint(1, 3), rng.choice(ENTITY_TYPES)
                for position in range(start, min(start + span, length)):
                    tags[position] = f"{'B' if position == start else 'I'}-{kind}"
                    tokens[position] = rng.choice(names)
            handle.write("".join(f"{t}\t{g}\n" for t, g in zip(tokens, tags)) + "\n")
    return {"tsv": tsv, "conll": conll}


def rss_mib() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def source_entries(files: dict[str, Path]) -> list[dict]:
    return [
        {
            "name": "sentiment",
            "train_file": str(files["tsv"]),
            "text_column": "sentence",
            "label_columns": {"sentiment": "label"},
            "label_maps": {"sentiment": {"0": "negative", "1": "positive"}},
        },
        {"name": "ner", "train_file": str(files["conll"]), "format": "conll", "label_columns": {"ner": "tags"}},
    ]


def worker(mode: str, files: dict[str, Path], num_proc: int | None, steps: int = STREAM_STEPS) -> dict:
    """One measurement, in this (fresh) process; `hf_mtl` is whichever checkout `PYTHONPATH` names."""
    from transformers import AutoModel

    import hf_mtl
    from hf_mtl.data.sources import load_source, parse_sources
    from hf_mtl.packaged_encoder import MINILM, resolve_encoder
    from hf_mtl.tokenization import load_tokenizer

    folder = resolve_encoder(MINILM.hub_id)
    tokenizer, model = load_tokenizer(folder), AutoModel.from_pretrained(folder)
    tasks = hf_mtl.parse_tasks(None)
    sources = parse_sources(source_entries(files), tasks)
    reset_peak_rss()
    baseline = rss_mib()
    accepted = inspect.signature(load_source).parameters
    options = {"num_proc": num_proc} if "num_proc" in accepted else {}
    started = time.perf_counter()
    if mode == "streaming":
        return {
            "hf_mtl": hf_mtl.__file__,
            "model_params": model.num_parameters(),
            **stream(files, tasks, tokenizer, steps),
        }
    rows = {}
    for source in sources:
        split = load_source(source, tasks, **options).splits["train"]
        tokenised = hf_mtl.tokenize_and_align(split, tokenizer, tasks, MAX_SEQ_LENGTH, num_proc)
        rows[source.name] = len(tokenised)
    return {
        "hf_mtl": hf_mtl.__file__,
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "peak_rss_above_model_mib": peak_rss_mib() - baseline,
        "rss_with_model_mib": baseline,
        "model_params": model.num_parameters(),
    }


def stream(files: dict[str, Path], tasks, tokenizer, steps: int) -> dict:
    """`run_mtl.py --streaming`'s path: time to the first training step of MiniLM on the interleaved streams, and RSS
    over `steps` steps (batch 32)."""
    import tempfile

    from transformers import TrainerCallback

    import hf_mtl
    from hf_mtl.packaged_encoder import MINILM, resolve_encoder

    class Probe(TrainerCallback):
        def __init__(self):
            self.first_step, self.rss, self.sentence_rows = None, {}, 0

        def on_step_begin(self, args, state, control, **kwargs):
            if self.first_step is None:
                self.first_step = time.perf_counter() - started

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (1, 10, steps // 2, steps):
                self.rss[state.global_step] = rss_mib() - baseline

    model = hf_mtl.MultiTaskModel.from_encoder(resolve_encoder(MINILM.hub_id), [t.to_dict() for t in tasks])
    baseline = rss_mib()
    started = time.perf_counter()
    data = hf_mtl.load_multitask_datasets(
        source_entries(files), tokenizer, tasks, MAX_SEQ_LENGTH, "proportional", seed=SEED, streaming=True
    )
    probe = Probe()
    with tempfile.TemporaryDirectory() as output_dir:
        args = hf_mtl.MultiTaskTrainingArguments(
            output_dir, max_steps=steps, per_device_train_batch_size=BATCH_SIZE, report_to="none",
            save_strategy="no", logging_steps=steps, disable_tqdm=True,
        )  # fmt: skip
        trainer = hf_mtl.MultiTaskTrainer(
            model=model, args=args, train_dataset=data.train, processing_class=tokenizer, callbacks=[probe]
        )
        trainer.train()
    return {
        "counted_rows": {source.config.name: source.num_rows["train"] for source in data.sources},
        "first_step_s": probe.first_step,
        "steps_s": time.perf_counter() - started,
        "rss_above_model_mib_at_step": probe.rss,
        "steps": steps,
        "rss_growth_mib": probe.rss[steps] - probe.rss[10],
        # The allocator settles on the batch shapes over the first tens of steps; the second half shows the trend.
        "rss_growth_second_half_mib": probe.rss[steps] - probe.rss[steps // 2],
    }


def measure(
    mode: str, files: dict[str, Path], cache: Path, tree: Path, num_proc: int | None, steps: int = STREAM_STEPS
) -> dict:
    """Runs `worker(mode)` in a fresh interpreter with `tree` first on the path and `cache` as the datasets cache."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        "--files",
        json.dumps({k: str(v) for k, v in files.items()}),
        "--stream_steps",
        str(steps),
    ]
    if num_proc is not None:
        command += ["--num_proc", str(num_proc)]
    result = subprocess.run(command, cwd=tree, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"worker {mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(results: dict) -> str:
    first, cached, streaming = results["first"], results["cached"], results["streaming"]
    before = results.get("before")
    lines = [
        f"| measure ({results['rows']:,} TSV rows + {results['sentences']:,} CoNLL sentences) | figure | target |",
        "|---|---|---|",
        f"| load + tokenise, first run | {first['seconds']:.1f} s | |",
        f"| peak RSS above the model, first run | {first['peak_rss_above_model_mib']:.0f} MiB | "
        f"<= {TARGETS['peak_rss_above_model_mib']:.0f} MiB |",
        f"| second run (cached) | {cached['seconds']:.2f} s ({results['cached_speedup']:.0f}x faster) | >= 10x |",
        f"| streaming: first training step (batch {BATCH_SIZE}) | {streaming['first_step_s']:.2f} s | <= 10 s |",
        f"| streaming: RSS growth, step 10 -> {streaming['steps']} | {streaming['rss_growth_mib']:.0f} MiB | "
        f"<= {TARGETS['rss_growth_mib']:.0f} MiB (flat) |",
        f"| streaming: RSS growth, step {streaming['steps'] // 2} -> {streaming['steps']} | "
        f"{streaming['rss_growth_second_half_mib']:.0f} MiB | |",
    ]
    if before is not None:
        lines += [
            f"| before (Dataset.from_list): load + tokenise | {before['seconds']:.1f} s | |",
            f"| before: peak RSS above the model | {before['peak_rss_above_model_mib']:.0f} MiB | |",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k rows + 4k sentences (CI smoke run)")
    parser.add_argument("--output", type=Path, help="results JSON (default: benchmarks/results/data_scale.json)")
    parser.add_argument("--before_tree", type=Path, help="an older hf_mtl checkout to measure as 'before'")
    parser.add_argument("--num_proc", type=int, help="processes for label mapping and tokenisation")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--stream_steps", type=int, default=STREAM_STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        files = {k: Path(v) for k, v in json.loads(args.files).items()}
        print(json.dumps(worker(args.worker, files, args.num_proc, args.stream_steps)))
        return 0

    rows, sentences = (QUICK_ROWS, QUICK_SENTENCES) if args.quick else (FULL_ROWS, FULL_SENTENCES)
    with tempfile.TemporaryDirectory(prefix="data_scale_") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        files = generate(folder, rows, sentences)
        results = {
            "rows": rows,
            "sentences": sentences,
            "generate_s": time.perf_counter() - started,
            "file_mib": {k: v.stat().st_size / 2**20 for k, v in files.items()},
            "cpu": cpu_name(),
        }
        for mode in ("first", "cached", "streaming"):
            steps = QUICK_STREAM_STEPS if args.quick else STREAM_STEPS
            results[mode] = measure(mode, files, folder / "cache", ROOT, args.num_proc, steps)
            print(f"{mode}: {json.dumps(results[mode])}", flush=True)
        if args.before_tree is not None:
            results["before"] = measure("first", files, folder / "cache_before", args.before_tree, args.num_proc)
            print(f"before: {json.dumps(results['before'])}", flush=True)
    results["cached_speedup"] = results["first"]["seconds"] / results["cached"]["seconds"]
    results["targets"] = {
        "peak_rss_above_model_mib": check(
            "peak_rss_above_model_mib", results["first"]["peak_rss_above_model_mib"], "<="
        ),
        "cached_speedup": check("cached_speedup", results["cached_speedup"], ">="),
        "first_step_s": check("first_step_s", results["streaming"]["first_step_s"], "<="),
        "rss_growth_mib": check("rss_growth_mib", results["streaming"]["rss_growth_mib"], "<="),
    }
    text = table(results)
    print(text)
    output = args.output or ROOT / "benchmarks" / "results" / "data_scale.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def check(name: str, value: float, relation: str) -> dict:
    """A target's verdict, with the margin by which it is met (positive) or missed (negative)."""
    target = TARGETS[name]
    margin = target - value if relation == "<=" else value - target
    return {"value": value, "target": f"{relation} {target}", "met": margin >= 0, "margin": margin}


if __name__ == "__main__":
    sys.exit(main())
