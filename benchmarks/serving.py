#!/usr/bin/env python
"""Serving on a CPU: the PyTorch pipeline, ONNX Runtime fp32 and int8, and the naive padded forward, in one process.

A model trained on SST-2 + WNUT-17 (`configs/sst2_wnut17.yaml`, `--steps` optimizer steps, or `--model_dir`) is
exported with `hf_mtl.export_onnx` (fp32, then dynamic int8), and each backend is measured on:
- speed: the 2,000 real sentences of `benchmarks/inference.py` (sentences/s, median of `--repeats` passes; within
  a pass the backends take turns on chunks of 250 sentences, so that load from other processes hits them alike);
- memory: peak RSS of a fresh process that loads only that backend and runs the 256 longest sentences once; the
  model file's size;
- accuracy: SST-2 dev accuracy and WNUT-17 dev entity F1 (seqeval) from the pipeline's answers (entities mapped
  back to words: a word inside an entity's span gets its B-/I- tag), so all backends are scored the same way;
- long texts: WNUT-17 test tweets concatenated into texts of 300-1,000 sub-tokens, read in windows (the pipeline's
  default stride) against the same tweets one by one, and with `truncation=True`; every gold entity must sit in a
  window.
The naive forward (`benchmarks/throughput.py`: every text padded to 128, batch 4) computes the same fp32 logits
as the PyTorch pipeline; only its speed and memory are measured.

    python benchmarks/serving.py                                   # trains 400 steps first (about 10 minutes)
    python benchmarks/serving.py --model_dir outputs/sst2_wnut17   # a trained model
    python benchmarks/serving.py --quick                           # smoke version: 8 training steps, small sets
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CONFIG, DATA, NEEDED, ROOT, finish  # noqa: E402
from inference import real_sentences  # noqa: E402
from throughput import cpu_description, naive_inference, peak_rss_mib, spread  # noqa: E402

BACKENDS = {
    "naive_forward": "naive forward: PyTorch, pad 128, batch 4",
    "pytorch_pipeline": "PyTorch fp32 pipeline",
    "onnx_fp32": "ONNX Runtime fp32 pipeline",
    "onnx_int8": "ONNX Runtime int8 pipeline",
}
LONG_TEXT_TARGETS = (300, 450, 600, 800, 1000)  # sub-tokens; texts cycle through these sizes
LONG_TEXT_MAX = 1000
CHUNK = 250  # sentences per turn of a backend in a timed pass
RSS_SENTENCES = 256  # the longest of the timed sentences, run once by the process whose peak RSS is read


def conll(name: str) -> list[tuple[list[str], list[str]]]:
    from hf_mtl.data.readers import read_conll

    path = str(DATA / "wnut17" / name)
    return [(row["tokens"], row["tags"]) for _, row in read_conll(path, "utf-8", ["tokens", "tags"], None)]


def joined(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The words joined by spaces, and each word's character span in that text."""
    spans, start = [], 0
    for word in words:
        spans.append((start, start + len(word)))
        start += len(word) + 1
    return " ".join(words), spans


def word_tags(entities: list[dict], spans: list[tuple[int, int]]) -> list[str]:
    """IOB2 tags per word from the pipeline's entities: a word inside an entity's span takes its type."""
    tags = ["O"] * len(spans)
    for entity in entities:
        inside = [i for i, (start, end) in enumerate(spans) if start >= entity["start"] and end <= entity["end"]]
        for rank, index in enumerate(inside):
            tags[index] = ("B-" if rank == 0 else "I-") + entity["entity_group"]
    return tags


def entity_f1(task, gold: list[list[str]], predicted: list[list[str]]) -> float:
    import numpy as np

    from hf_mtl.metrics import token_metrics

    def ids(rows):
        return [np.array([task.label2id[tag] for tag in row]) for row in rows]

    return token_metrics(task, ids(predicted), ids(gold))[f"{task.name}_f1"]


def long_texts(sentences, tokenizer) -> list[dict]:
    """Consecutive tweets joined into texts of 300 to 1,000 sub-tokens, aiming at each of `LONG_TEXT_TARGETS` in
    turn; a text closes early when the next tweet would take it past 1,000. A tweet over 700 sub-tokens that cannot
    join any text in the range is left out."""

    def text(parts: list, length: int) -> dict:
        words = [word for tokens, _ in parts for word in tokens]
        tags = [tag for _, gold in parts for tag in gold]
        return {"words": words, "tags": tags, "parts": parts, "sentences": len(parts), "sub_tokens": length}

    texts, targets = [], itertools.cycle(LONG_TEXT_TARGETS)
    parts, length, target = [], 0, next(targets)
    for tokens, gold in sentences:
        size = len(tokenizer(" ".join(tokens), add_special_tokens=False)["input_ids"])
        if length + size > LONG_TEXT_MAX and length >= LONG_TEXT_TARGETS[0]:
            texts.append(text(parts, length))
            parts, length, target = [], 0, next(targets)
        if length + size > LONG_TEXT_MAX:
            continue
        parts, length = [*parts, (tokens, gold)], length + size
        if length >= target:
            texts.append(text(parts, length))
            parts, length, target = [], 0, next(targets)
    return texts


def unseen_gold_entities(texts: list[dict], pipe, max_length: int, stride: int, truncation: bool) -> int:
    """Gold entities whose first word starts in none of the windows the pipeline reads (its own `preprocess`; with
    `truncation`, only the first window)."""
    unseen = 0
    for item in texts:
        text, spans = joined(item["words"])
        windows = pipe.preprocess(text, max_length=max_length, stride=stride, truncation=truncation)
        # A window holds a contiguous run of sub-tokens: the characters from its first one's start to its last end.
        offsets = [[(a, b) for a, b in window["offset_mapping"][0].tolist() if b > a] for window in windows]
        ranges = [(min(a for a, _ in window), max(b for _, b in window)) for window in offsets]
        for index, tag in enumerate(item["tags"]):
            start = spans[index][0]
            unseen += tag.startswith("B-") and not any(low <= start < high for low, high in ranges)
    return unseen


def train(workdir: Path, steps: int, quick: bool) -> tuple[Path, list[str]]:
    output_dir = workdir / "model"
    command = [
        sys.executable,
        "run_mtl.py",
        CONFIG,
        "--output_dir",
        str(output_dir),
        "--max_steps",
        str(steps),
        "--eval_strategy",
        "no",
        "--do_predict",
        "false",
        "--disable_tqdm",
        "true",
    ]
    if quick:
        command += ["--max_train_samples", "1000", "--max_eval_samples", "64"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"training failed:\n{' '.join(command)}\n{result.stderr[-3000:]}")
    return output_dir, command


def load_backend(name: str, model_dir: Path, workdir: Path):
    """The callable a backend times: a pipeline, or the naive forward over a list of texts."""
    import transformers

    import hf_mtl

    if name == "naive_forward":
        model = hf_mtl.MultiTaskModel.from_pretrained(model_dir).eval()
        tokenizer = hf_mtl.load_tokenizer(str(model_dir))
        return lambda texts: naive_inference(model, tokenizer, texts)
    folder = model_dir if name == "pytorch_pipeline" else workdir / name
    return transformers.pipeline("multitask", model=str(folder))


def timed_passes(backends: dict, texts: list[str], repeats: int) -> dict[str, list[float]]:
    """Sentences/s of each backend per pass over `texts`. A pass runs the texts in chunks, and the backends take
    turns on each chunk (in a rotating order), so that load from other processes on a shared machine falls on all
    of them alike rather than on whichever ran during a busy minute."""
    chunks = [texts[start : start + CHUNK] for start in range(0, len(texts), CHUNK)]
    names = list(backends)
    for run in backends.values():
        run(texts[:64])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        seconds = dict.fromkeys(names, 0.0)
        for index, chunk in enumerate(chunks):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                started = time.perf_counter()
                backends[name](chunk)
                seconds[name] += time.perf_counter() - started
        for name in names:
            rates[name].append(len(texts) / seconds[name])
        print({name: round(values[-1], 1) for name, values in rates.items()}, flush=True)
    return rates


def rss_of(name: str, model_dir: Path, workdir: Path, sentences: int) -> float:
    """Peak RSS (MiB) of a fresh process that loads only `name` and runs the sentences once."""
    command = [sys.executable, __file__, "--rss_of", name, "--model_dir", str(model_dir), "--workdir", str(workdir)]
    result = subprocess.run([*command, "--sentences", str(sentences)], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"peak RSS of {name} failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def sst2_dev(limit: int | None) -> list[tuple[str, str]]:
    rows = (DATA / "sst2_glue" / "dev.tsv").read_text().splitlines()[1:]
    labels = {"0": "negative", "1": "positive"}
    return [(line.split("\t")[0].strip(), labels[line.split("\t")[1].strip()]) for line in rows][:limit]


def score(pipe, sst2, wnut, task) -> dict[str, float]:
    """SST-2 dev accuracy and WNUT-17 dev entity F1 from a pipeline's answers."""
    answers = pipe([text for text, _ in sst2])
    accuracy = statistics.fmean(answer["sentiment"]["label"] == gold for answer, (_, gold) in zip(answers, sst2))
    texts = [joined(words) for words, _ in wnut]
    answers = pipe([text for text, _ in texts])
    predicted = [word_tags(answer["entities"], spans) for answer, (_, spans) in zip(answers, texts)]
    return {"sst2_dev_accuracy": accuracy, "wnut17_dev_f1": entity_f1(task, [tags for _, tags in wnut], predicted)}


def long_text_scores(pipe, texts: list[dict], task) -> dict[str, float]:
    """Entity F1 of the long texts read in windows, with `truncation=True`, and of their tweets one by one."""
    joined_texts = [joined(item["words"]) for item in texts]
    gold = [item["tags"] for item in texts]
    started = time.perf_counter()
    windowed = pipe([text for text, _ in joined_texts])
    seconds = time.perf_counter() - started
    truncated = pipe([text for text, _ in joined_texts], truncation=True)
    tweets = [joined(words) for item in texts for words, _ in item["parts"]]
    one_by_one = pipe([text for text, _ in tweets])
    return {
        "windowed_f1": entity_f1(
            task, gold, [word_tags(a["entities"], s) for a, (_, s) in zip(windowed, joined_texts)]
        ),
        "truncated_f1": entity_f1(
            task, gold, [word_tags(a["entities"], s) for a, (_, s) in zip(truncated, joined_texts)]
        ),
        "one_by_one_f1": entity_f1(
            task,
            [tags for item in texts for _, tags in item["parts"]],
            [word_tags(a["entities"], s) for a, (_, s) in zip(one_by_one, tweets)],
        ),
        "windowed_tweets_per_second": len(tweets) / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 training steps, 200 sentences, one timed pass")
    parser.add_argument("--model_dir", type=Path, default=None, help="a model trained on SST-2 + WNUT-17")
    parser.add_argument("--steps", type=int, default=None, help="training steps without --model_dir (400; quick 8)")
    parser.add_argument("--sentences", type=int, default=None, help="timed sentences (default 2000, quick 200)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes per backend (default 3, quick 1)")
    parser.add_argument("--output", type=Path, default=None, help="results JSON")
    parser.add_argument("--docs", type=Path, default=None, help="markdown to update (default docs/BENCHMARKS.md)")
    parser.add_argument("--rss_of", choices=list(BACKENDS), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    missing = [name for name in NEEDED if not (DATA / name).is_file()]
    if missing:
        print(f"SKIPPED: the real corpora are not available ({DATA / missing[0]} is missing); they live in {DATA}")
        return 0

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("hf_mtl.pipeline").setLevel(logging.ERROR)  # `truncation=True` warns once per long text
    count = args.sentences or (200 if args.quick else 2000)
    if args.rss_of:  # a serving process: it imports what its backend needs and nothing else
        longest = sorted(real_sentences(count), key=len, reverse=True)[:RSS_SENTENCES]
        load_backend(args.rss_of, args.model_dir, args.workdir)(longest)
        print(json.dumps(peak_rss_mib()))
        return 0

    import torch

    from hf_mtl.onnx_export import export_onnx
    from hf_mtl.onnx_model import OnnxMultiTaskModel
    from hf_mtl.pipeline import DEFAULT_STRIDE_FRACTION

    repeats = args.repeats or (1 if args.quick else 3)
    steps = args.steps or (8 if args.quick else 400)
    limit = 200 if args.quick else None
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir, train_command = (args.model_dir, None) if args.model_dir else train(workdir, steps, args.quick)
        for name, quantize in (("onnx_fp32", None), ("onnx_int8", "int8")):
            export_onnx(model_dir, workdir / name, quantize=quantize)
        state = model_dir / "trainer_state.json"
        trained_steps = json.loads(state.read_text())["global_step"] if state.is_file() else None
        backends = {name: load_backend(name, model_dir, workdir) for name in BACKENDS}
        pytorch = backends["pytorch_pipeline"]
        config, tokenizer = pytorch.model.config, pytorch.tokenizer
        task = next(task for task in config.task_specs if task.is_token_task)

        texts = real_sentences(count)
        rates = timed_passes(backends, texts, repeats)

        # ONNX logits against PyTorch's, on a padded batch of 64 real sentences.
        batch = tokenizer(texts[:64], padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode():
            expected = backends["pytorch_pipeline"].model(**batch).logits
        differences = {}
        for name in ("onnx_fp32", "onnx_int8"):
            got = OnnxMultiTaskModel.from_pretrained(workdir / name)(**batch).logits
            differences[name] = max(float((got[key] - expected[key]).abs().max()) for key in expected)

        sst2, wnut = sst2_dev(limit), conll("emerging.dev.conll")[:limit]
        test = conll("emerging.test.annotated")
        long = long_texts(test, tokenizer)[: 4 if args.quick else None]
        max_length = config.max_seq_length or tokenizer.model_max_length
        stride = max_length // DEFAULT_STRIDE_FRACTION
        pipelines = [name for name in BACKENDS if name != "naive_forward"]
        accuracy = {name: score(backends[name], sst2, wnut, task) for name in pipelines}
        long_scores = {name: long_text_scores(backends[name], long, task) for name in pipelines}
        sizes = {
            "naive_forward": (model_dir / "model.safetensors").stat().st_size,
            "pytorch_pipeline": (model_dir / "model.safetensors").stat().st_size,
            "onnx_fp32": (workdir / "onnx_fp32" / "model.onnx").stat().st_size,
            "onnx_int8": (workdir / "onnx_int8" / "model.onnx").stat().st_size,
        }
        rss = {name: rss_of(name, model_dir, workdir, count) for name in BACKENDS}

    results = {
        "command": "python benchmarks/serving.py"
        + (" --quick" if args.quick else "")
        + (f" --model_dir {args.model_dir}" if args.model_dir else ""),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_description(),
        "model": {
            "dir": str(args.model_dir) if args.model_dir else None,
            "train_command": " ".join(train_command[1:]) if train_command else None,
            "max_seq_length": max_length,
            "trained_steps": trained_steps,
        },
        "sentences": len(texts),
        "repeats": repeats,
        "backends": {
            name: {
                "label": label,
                "sentences_per_second": spread(rates[name]),
                "peak_rss_mib": rss[name],
                "file_mib": sizes[name] / 2**20,
                **accuracy.get(name, {}),
                **({"max_abs_logit_difference": differences[name]} if name in differences else {}),
            }
            for name, label in BACKENDS.items()
        },
        "long_texts": {
            "texts": len(long),
            "tweets": sum(item["sentences"] for item in long),
            "sub_tokens": {"min": min(i["sub_tokens"] for i in long), "max": max(i["sub_tokens"] for i in long)},
            "window": max_length,
            "stride": stride,
            "gold_entities": sum(tag.startswith("B-") for item in long for tag in item["tags"]),
            "unseen_gold_entities": unseen_gold_entities(long, pytorch, max_length, stride, truncation=False),
            "unseen_gold_entities_truncated": unseen_gold_entities(long, pytorch, max_length, stride, True),
            "scores": long_scores,
        },
    }
    return report(args, results)


def report(args, results: dict) -> int:
    backends = results["backends"]
    median = {name: backend["sentences_per_second"]["median"] for name, backend in backends.items()}
    fp32, int8 = backends["onnx_fp32"], backends["onnx_int8"]
    best = max(("pytorch_pipeline", "onnx_fp32", "onnx_int8"), key=median.get)
    ratios = {
        "onnx_fp32/pytorch_pipeline": median["onnx_fp32"] / median["pytorch_pipeline"],
        "onnx_int8/pytorch_pipeline": median["onnx_int8"] / median["pytorch_pipeline"],
        "best_pipeline/naive_forward": median[best] / median["naive_forward"],
        "int8_file/fp32_file": int8["file_mib"] / fp32["file_mib"],
    }
    results["ratios"] = ratios
    long = results["long_texts"]
    cpu = results["cpu"]

    def cell(value, digits=1, scale=100.0):
        return "–" if value is None else f"{value * scale:.{digits}f}"

    rows = [
        f"| {b['label']} | {b['sentences_per_second']['min']:.1f} / {b['sentences_per_second']['median']:.1f} / "
        f"{b['sentences_per_second']['max']:.1f} | {b['peak_rss_mib']:.0f} | {b['file_mib']:.1f} | "
        f"{cell(b.get('sst2_dev_accuracy'))} | {cell(b.get('wnut17_dev_f1'))} |"
        for b in backends.values()
    ]
    long_rows = [
        f"| {backends[name]['label']} | {cell(s['windowed_f1'])} | {cell(s['one_by_one_f1'])} | "
        f"{cell(s['truncated_f1'])} | {s['windowed_tweets_per_second']:.1f} |"
        for name, s in long["scores"].items()
    ]

    def target(text: str, met: bool) -> str:
        return f"- {text}: **{'met' if met else 'missed'}**"

    sst2_gap = (fp32["sst2_dev_accuracy"] - int8["sst2_dev_accuracy"]) * 100
    f1_gap = (fp32["wnut17_dev_f1"] - int8["wnut17_dev_f1"]) * 100
    long_gap = max(abs(s["windowed_f1"] - s["one_by_one_f1"]) * 100 for s in long["scores"].values())
    model = results["model"]
    trained = f"`--model_dir {model['dir']}`" if model["dir"] else f"`{model['train_command']}`"
    if model["trained_steps"] is not None:
        trained += f" ({model['trained_steps']} training steps)"
    table = "\n".join(
        [
            f"Command: `{results['command']}` ({results['date']}; {cpu['cpu']}, {cpu['capability']}, "
            f"{cpu['threads']} threads for every backend). Model: {trained}, MiniLM, windows of "
            f"{model['max_seq_length']} sub-tokens. Speed: {results['sentences']} real sentences (SST-2 dev, then "
            f"WNUT-17 dev/test), median of {results['repeats']} passes after a warm-up (the "
            f"backends take turns on chunks of {CHUNK}); peak RSS of a fresh process running one backend on the "
            f"{RSS_SENTENCES} longest sentences; accuracy on SST-2 dev and WNUT-17 dev from the pipeline's answers.",
            "",
            "| backend | sentences/s (min / median / max) | peak RSS (MiB) | file (MiB) | SST-2 dev acc | "
            "WNUT-17 dev F1 |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "The naive forward computes the PyTorch pipeline's fp32 logits (same weights), so it is not scored again. "
            f"Largest logit difference from PyTorch on 64 padded sentences: fp32 "
            f"{fp32['max_abs_logit_difference']:.1e}, int8 {int8['max_abs_logit_difference']:.2f}.",
            "",
            f"Long texts: {long['texts']} texts of {long['sub_tokens']['min']}-{long['sub_tokens']['max']} sub-tokens "
            f"({long['tweets']} WNUT-17 test tweets joined by spaces, {long['gold_entities']} gold entities), "
            f"windows of {long['window']} with stride {long['stride']}: {long['unseen_gold_entities']} gold entities "
            f"outside every window ({long['unseen_gold_entities_truncated']} outside the first window, which is all "
            "`truncation=True` reads).",
            "",
            "| backend | entity F1, windows | same tweets one by one | `truncation=True` | tweets/s in windows |",
            "|---|---|---|---|---|",
            *long_rows,
            "",
            "Targets:",
            target(
                f"ONNX fp32 logits equal PyTorch's to 1e-4 ({fp32['max_abs_logit_difference']:.1e})",
                fp32["max_abs_logit_difference"] <= 1e-4,
            ),
            target(
                f"int8 / PyTorch pipeline ≥ 2× ({ratios['onnx_int8/pytorch_pipeline']:.2f}×)",
                ratios["onnx_int8/pytorch_pipeline"] >= 2,
            ),
            target(f"int8 SST-2 dev accuracy within 0.5 point of fp32 ({-sst2_gap:+.1f})", abs(sst2_gap) <= 0.5),
            target(f"int8 WNUT-17 dev F1 within 1 point of fp32 ({-f1_gap:+.1f})", abs(f1_gap) <= 1),
            target(
                f"int8 file ≤ 30 % of fp32's ({ratios['int8_file/fp32_file'] * 100:.0f} %)",
                ratios["int8_file/fp32_file"] <= 0.3,
            ),
            target(
                f"best pipeline ({backends[best]['label']}) / naive forward ≥ 5× "
                f"({ratios['best_pipeline/naive_forward']:.2f}×)",
                ratios["best_pipeline/naive_forward"] >= 5,
            ),
            target(f"long-text F1 within 1 point of one by one (largest gap {long_gap:.1f})", long_gap <= 1),
            target(
                f"every gold entity of the long texts in a window ({long['unseen_gold_entities']} unseen)",
                long["unseen_gold_entities"] == 0,
            ),
        ]
    )
    return finish(args, results, table, "serving", "Serving on a CPU: PyTorch and ONNX Runtime, long texts")


if __name__ == "__main__":
    sys.exit(main())
