#!/usr/bin/env python
"""Training and inference speed on the CPU: hf_mtl against the naive loop and the plain Trainer, in one process.

Real sentences (SST-2 train + WNUT-17 train, equal mixing, as `configs/sst2_wnut17.yaml`), the packaged MiniLM:
- (a) `naive`: a plain PyTorch loop over the multi-task model, every example padded to 128, batch 4, fp32, AdamW;
- (b) `defaults`: `MultiTaskTrainer` with hf_mtl's default arguments;
- (c) `bf16`: the same with `--bf16 true` (CPU autocast);
- (d) `plain`: the plain `Trainer` with a single-task `AutoModelForTokenClassification` on the same batches as (b)
  (drawn with hf_mtl's length-grouped sampler);
plus ablations (full run only) that switch one default at a time. Each mode warms up for a few steps, then is
timed over windows of 50 steps (the naive loop: 64): length-grouped batches come in "megabatches" of 50 batches
sorted by length, so 50 consecutive steps hold every length of a random sample of the rows, and windows compare
like with like. Figures are min / median / max over the windows. Inference times the naive
forward (pad 128, batch 4) against `pipeline("multitask")` on the dev/test sentences of both corpora.

Model FLOPs of a sequence of t real tokens, trained: 6·P·t + 12·L·d·t², where P counts the weights of every
matrix multiply that runs per token (encoder layers and token heads), L the layers and d the hidden size (the
attention scores and their weighted sum). Achieved FLOP/s counts real tokens only (padding is waste) and is given
as a fraction of a 2048³ matmul's FLOP/s in the same dtype, measured in the same run.

    python benchmarks/throughput.py            # the full run (about 10 minutes on 2 cores), updates docs
    python benchmarks/throughput.py --quick    # a smoke version: a few steps per mode
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, NEEDED, ROOT, cpu_name, finish  # noqa: E402
from inference import real_sentences  # noqa: E402

CONFIG = ROOT / "configs" / "sst2_wnut17.yaml"
NAIVE_LENGTH, NAIVE_BATCH = 128, 4
WARMUP_STEPS = 3
CORPUS_ROWS = 6400  # enough for full 50-batch megabatches at batch 32 (the sampler caps them at a quarter)
LEARNING_RATE = 2e-4


def peak_rss_mib() -> float:
    """Peak resident memory of this process since the last `reset_peak_rss()` (Linux), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def reset_peak_rss() -> None:
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the figure is then the process's peak so far


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def matmul_peak(dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a size³ matmul in `dtype` (best of `repeats`, after a warm-up)."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    linear = torch.nn.functional.linear  # a @ b.T, the call (and the oneDNN path) of every nn.Linear
    linear(a, b)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        linear(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


class BatchLog:
    """Per optimizer step: examples, real tokens, padded tokens and model FLOPs of the real tokens, summed over the
    step's forward passes (one, or one per micro-batch with `--sorted_micro_batches`)."""

    def __init__(self, per_token_flops: float, attention_flops: float):
        self.per_token_flops, self.attention_flops = per_token_flops, attention_flops
        self.rows: list[tuple[int, int, int, float]] = []
        self._step: tuple[int, int, int, float] | None = None

    def add(self, attention_mask) -> None:
        lengths = attention_mask.sum(dim=1).tolist()
        flops = sum(self.per_token_flops * t + self.attention_flops * t * t for t in lengths)
        row = (len(lengths), int(sum(lengths)), attention_mask.numel(), flops)
        self._step = row if self._step is None else tuple(a + b for a, b in zip(self._step, row))

    def end_step(self) -> None:
        """Closes the optimizer step: its forward passes become one row."""
        if self._step is not None:
            self.rows.append(self._step)
            self._step = None

    def hook(self, module, args, kwargs) -> None:
        """A forward pre-hook: logs the batch the model is called on in training."""
        if module.training:
            self.add(kwargs["attention_mask"])


class TimedCollator:
    """Wraps a data collator and adds up the seconds spent in it (with the loader in the training process)."""

    def __init__(self, collator):
        self.collator, self.seconds = collator, 0.0

    def __call__(self, features):
        started = time.perf_counter()
        batch = self.collator(features)
        self.seconds += time.perf_counter() - started
        return batch


def windows(step_ends: list[float], log: BatchLog, window_steps: int) -> dict:
    """Examples/s, real tokens/s and FLOP/s per timed window of `window_steps` steps, after `WARMUP_STEPS`."""
    warmup = WARMUP_STEPS
    per_window = {"examples_per_second": [], "tokens_per_second": [], "flops": []}
    examples = tokens = padded = 0
    # step_ends[0] is when step 1 began, step_ends[k] when step k ended; log.rows[k - 1] is step k's batch.
    for start in range(warmup, len(step_ends) - window_steps, window_steps):
        seconds = step_ends[start + window_steps] - step_ends[start]
        rows = log.rows[start : start + window_steps]
        per_window["examples_per_second"].append(sum(r[0] for r in rows) / seconds)
        per_window["tokens_per_second"].append(sum(r[1] for r in rows) / seconds)
        per_window["flops"].append(sum(r[3] for r in rows) / seconds)
        examples += sum(r[0] for r in rows)
        tokens += sum(r[1] for r in rows)
        padded += sum(r[2] for r in rows)
    if not per_window["flops"]:
        raise SystemExit(f"not enough steps for one timed window: {len(step_ends)} steps, warm-up {warmup}")
    result = {key: spread(values) for key, values in per_window.items()}
    result["windows"] = len(per_window["flops"])
    result["padding_fraction"] = 1 - tokens / padded
    result["mean_batch"] = examples / (result["windows"] * window_steps)
    return result


def model_flop_constants(model) -> tuple[float, float]:
    """(6·P, 12·L·d) of the formula in the module docstring, from the model's own modules."""
    from torch import nn

    encoder = model.encoder if hasattr(model, "encoder") and hasattr(model.encoder, "encoder") else model.bert
    layers = encoder.encoder.layer
    weights = sum(m.weight.numel() for m in layers.modules() if isinstance(m, nn.Linear))
    heads = getattr(model, "heads", None)
    if heads is not None:  # hf_mtl: token heads run per token (the sentence head once per sequence: negligible)
        specs = {task.name: task for task in model.config.task_specs}
        weights += sum(h.classifier.weight.numel() for name, h in heads.items() if specs[name].is_token_task)
    else:
        weights += model.classifier.weight.numel()
    config = encoder.config
    return 6.0 * weights, 12.0 * config.num_hidden_layers * config.hidden_size


def load_corpus(tokenizer, tasks, rows: int, seed: int = 0):
    """The first `rows` of the equal-mixed SST-2 + WNUT-17 training stream, tokenised by hf_mtl."""
    import yaml

    from hf_mtl import load_multitask_datasets

    entries = []
    for entry in yaml.safe_load(CONFIG.read_text())["datasets"]:
        files = {k: str(ROOT / v) for k, v in entry.items() if k == "train_file"}
        entries.append({**{k: v for k, v in entry.items() if not k.endswith("_file")}, **files})
    data = load_multitask_datasets(entries, tokenizer, tasks, 128, "equal", seed=seed, max_train_samples=rows)
    return data.train.select(range(rows))


def naive_training(model, tokenizer, corpus, steps: int, log: BatchLog) -> list[float]:
    """The loop people write first: pad to 128, batch 4, fp32, AdamW; returns each step's end time."""
    import torch
    from torch.utils.data import DataLoader

    from hf_mtl.data.collator import MultiTaskDataCollator

    collator = MultiTaskDataCollator(tokenizer, ["ner_labels"])

    def pad_to_128(features):
        padded = tokenizer.pad(
            [{k: v for k, v in f.items() if k not in ("ner_labels", "length")} for f in features],
            padding="max_length",
            max_length=NAIVE_LENGTH,
            return_tensors="pt",
        )
        labels = collator(features)["ner_labels"]
        padded["ner_labels"] = torch.nn.functional.pad(labels, (0, NAIVE_LENGTH - labels.shape[1]), value=-100)
        padded["sentiment_labels"] = torch.tensor([f["sentiment_labels"] for f in features])
        return padded

    model.register_forward_pre_hook(log.hook, with_kwargs=True)
    loader = DataLoader(corpus, batch_size=NAIVE_BATCH, shuffle=True, collate_fn=pad_to_128)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    model.train()
    step_ends = [time.perf_counter()]
    epochs = itertools.chain.from_iterable(loader for _ in range(math.ceil(steps / len(loader))))
    for step, batch in enumerate(epochs):
        if step == steps:
            break
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step_ends.append(time.perf_counter())
        log.end_step()
    return step_ends


def trainer_training(trainer_class, model, arguments: dict, corpus, collator, steps: int, log: BatchLog) -> dict:
    """Trains with a Trainer for `steps` steps; returns step end times and the data-loading share."""
    import torch
    from transformers import TrainerCallback

    from hf_mtl.arguments import MultiTaskTrainingArguments

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not step_ends:
                step_ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())
            log.end_step()

    timed_collator = TimedCollator(collator)
    model.register_forward_pre_hook(log.hook, with_kwargs=True)
    with tempfile.TemporaryDirectory() as output_dir:
        args = MultiTaskTrainingArguments(
            output_dir=output_dir,
            max_steps=steps,
            learning_rate=LEARNING_RATE,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            logging_steps=50,
            log_level="error",
            **arguments,
        )
        trainer = trainer_class(
            model=model, args=args, train_dataset=corpus, data_collator=timed_collator, callbacks=[StepClock()]
        )
        torch.manual_seed(0)  # the sampler's shuffle: the same batches for every Trainer run
        trainer.train()
        settings = {
            "batch_size": args.per_device_train_batch_size,
            "sampling": args.train_sampling_strategy,
            "bf16": args.bf16,
            "threads": torch.get_num_threads(),
            "optimizer": str(getattr(args.optim, "value", args.optim)),
            "dataloader_num_workers": args.dataloader_num_workers,
            "sorted_micro_batches": getattr(args, "sorted_micro_batches", None),
        }
    # The first step's begin comes after its batch was made: the clock starts at the first step.
    return {"step_ends": step_ends, "loading_seconds": timed_collator.seconds, "settings": settings}


def same_batches_trainer(multitask_corpus, label_keys: list[str]):
    """The plain `Trainer`, except that it draws its batches with hf_mtl's training sampler, built on the multi-task
    rows (the same rows in the same order), so that (d) trains on exactly the batches of (b); everything else
    (model, loss, loop) is the Trainer's own."""
    import transformers

    from hf_mtl.data.sampling import training_sampler

    class PlainTrainer(transformers.Trainer):
        def _get_train_sampler(self, train_dataset=None):
            sampler = training_sampler(multitask_corpus, self.args, label_keys)
            return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    return PlainTrainer


def plain_token_corpus(corpus):
    """The rows for (d): one `labels` column of NER tags, where a sentiment row (no tag) is tagged `O` on its words,
    so that every row of a batch has a loss, as in the multi-task model."""
    return corpus.map(
        lambda row: {
            "labels": [
                0 if i and i < len(row["ner_labels"]) - 1 and label == -100 else label
                for i, label in enumerate(row["ner_labels"])
            ]
            if all(label == -100 for label in row["ner_labels"])
            else row["ner_labels"]
        },
        remove_columns=["ner_labels", "sentiment_labels"],
    )


def naive_inference(model, tokenizer, texts: list[str]) -> None:
    """The naive forward pass: pad to 128, batch 4, fp32."""
    import torch

    with torch.no_grad():
        for start in range(0, len(texts), NAIVE_BATCH):
            batch = tokenizer(
                texts[start : start + NAIVE_BATCH],
                padding="max_length",
                truncation=True,
                max_length=NAIVE_LENGTH,
                return_tensors="pt",
            )
            model(**batch)


def timed_chunks(function, texts: list[str], chunks: int) -> list[float]:
    """Sentences/s of `function(chunk)` over `chunks` equal slices of `texts`, after a warm-up on the first."""
    size = len(texts) // chunks
    function(texts[:size])
    rates = []
    for index in range(chunks):
        chunk = texts[index * size : (index + 1) * size]
        started = time.perf_counter()
        function(chunk)
        rates.append(len(chunk) / (time.perf_counter() - started))
    return rates


def cpu_description() -> dict:
    import torch

    return {
        "cpu": cpu_name(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "amx_bf16": bool(torch.cpu._is_amx_tile_supported()),
        "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        "threads": torch.get_num_threads(),
    }


# Ablations switch one of hf_mtl's defaults back, to show what each is worth (full run only).
ABLATIONS = {
    "random_sampling": ({"train_sampling_strategy": "random"}, "dynamic padding only (no length grouping)"),
    "batch_8": ({"per_device_train_batch_size": 8}, "batch 8 (the Trainer's default)"),
    "one_thread": ({"torch_num_threads": 1}, "1 intra-op thread"),
    "loader_worker": ({"dataloader_num_workers": 1}, "1 data-loader worker process"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke version: 2 windows of 4 steps, no ablations")
    parser.add_argument("--windows", type=int, default=None, help="timed windows per mode (default 3, quick 2)")
    parser.add_argument("--window_steps", type=int, default=None, help="steps per window (default 50, quick 4)")
    parser.add_argument("--sentences", type=int, default=None, help="inference sentences (default 1000)")
    parser.add_argument("--skip_bf16", action="store_true", help="leave out (c)")
    parser.add_argument("--output", type=Path, default=None, help="results JSON")
    parser.add_argument("--docs", type=Path, default=None, help="markdown to update (default docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)
    missing = [name for name in NEEDED if not (DATA / name).is_file()]
    if missing:
        print(f"SKIPPED: the real corpora are not available ({DATA / missing[0]} is missing); see ../shared/data")
        return 0

    import datasets
    import torch
    import transformers
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

    from hf_mtl import MultiTaskModel, MultiTaskTrainer, load_tokenizer
    from hf_mtl.cpu import has_native_bf16
    from hf_mtl.data.collator import MultiTaskDataCollator
    from hf_mtl.packaged_encoder import MINILM, resolve_encoder
    from hf_mtl.tasks import parse_tasks

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    n_windows = args.windows or (2 if args.quick else 3)
    window_steps = args.window_steps or (4 if args.quick else 50)
    encoder = resolve_encoder(MINILM.hub_id)
    tokenizer = load_tokenizer(encoder)
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    tasks = parse_tasks(config["tasks"])
    corpus = load_corpus(tokenizer, tasks, rows=CORPUS_ROWS)
    ner = next(task for task in tasks if task.is_token_task)

    def multitask_model():
        return MultiTaskModel.from_encoder(encoder, [t.to_dict() for t in tasks], sentence_pooling="mean")

    def steps_for(naive: bool = False, slow: bool = False) -> tuple[int, int]:
        """Steps per window and in all. The naive loop's windows are 64 steps (256 rows) of shuffled rows; emulated
        bf16 (an order of magnitude slower) gets one window of a quarter of the steps."""
        steps = round(window_steps * 64 / 50) if naive else window_steps
        if slow:
            return max(1, steps // 4), WARMUP_STEPS + max(1, steps // 4)
        return steps, WARMUP_STEPS + n_windows * steps

    results: dict = {"machine": cpu_description(), "modes": {}}
    peaks = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16, repeats=1)}
    results["matmul_peak_gflops"] = {k: v / 1e9 for k, v in peaks.items()}
    print(f"machine: {results['machine']}")
    print(f"2048³ matmul: fp32 {peaks['float32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s")

    def record(name: str, label: str, log: BatchLog, step_ends, window_steps: int, extra: dict) -> None:
        measured = windows(step_ends, log, window_steps)
        dtype = "bfloat16" if extra.get("bf16") else "float32"
        measured["peak_fraction"] = measured["flops"]["median"] / peaks[dtype]
        measured.update(label=label, peak_rss_mib=peak_rss_mib(), **extra)
        results["modes"][name] = measured
        rate = measured["examples_per_second"]
        print(
            f"{name:>15}: {rate['min']:6.1f} / {rate['median']:6.1f} / {rate['max']:6.1f} ex/s, "
            f"{measured['tokens_per_second']['median']:7.0f} real tok/s, padding {measured['padding_fraction']:.0%}, "
            f"{measured['flops']['median'] / 1e9:5.1f} GFLOP/s ({measured['peak_fraction']:.1%} of {dtype} peak), "
            f"peak RSS {measured['peak_rss_mib']:.0f} MiB",
            flush=True,
        )

    # (a) the naive loop
    reset_peak_rss()
    model = multitask_model()
    log = BatchLog(*model_flop_constants(model))
    naive_window, steps = steps_for(naive=True)
    step_ends = naive_training(model, tokenizer, corpus, steps, log)
    record("naive", "naive loop: pad 128, batch 4, fp32", log, step_ends, naive_window, {"batch_size": NAIVE_BATCH})
    del model

    threads = torch.get_num_threads()

    def run_hf_mtl(name: str, label: str, overrides: dict) -> list:
        torch.set_num_threads(threads)  # an ablation may have changed it
        reset_peak_rss()
        model = multitask_model()
        log = BatchLog(*model_flop_constants(model))
        slow = bool(overrides.get("bf16")) and not has_native_bf16()
        mode_window, steps = steps_for(slow=slow)
        collator = MultiTaskDataCollator(tokenizer, [t.label_key for t in tasks if t.is_token_task])
        run = trainer_training(MultiTaskTrainer, model, overrides, corpus, collator, steps, log)
        loading = run["loading_seconds"] / (run["step_ends"][-1] - run["step_ends"][0])
        label += f" (one window of {mode_window} steps: emulated bf16)" if slow else ""
        record(name, label, log, run["step_ends"], mode_window, {**run["settings"], "loading_share": loading})
        return log.rows

    default_rows = run_hf_mtl("defaults", "hf_mtl defaults", {})
    # Without native bf16 the quick run leaves (c) out: emulated bf16 is an order of magnitude slower than fp32.
    if not args.skip_bf16 and (has_native_bf16() or not args.quick):
        run_hf_mtl("bf16", "hf_mtl --bf16 true", {"bf16": True})

    # (d) the plain Trainer, one task, the same rows and batches
    reset_peak_rss()
    plain_corpus = plain_token_corpus(corpus)
    model = AutoModelForTokenClassification.from_pretrained(encoder, num_labels=len(ner.labels))
    log = BatchLog(*model_flop_constants(model))
    plain_window, steps = steps_for()
    run = trainer_training(
        same_batches_trainer(corpus, [t.label_key for t in tasks]),
        model,
        {},
        plain_corpus,
        DataCollatorForTokenClassification(tokenizer),
        steps,
        log,
    )
    record(
        "plain", "plain Trainer, AutoModelForTokenClassification", log, run["step_ends"], plain_window, run["settings"]
    )
    results["same_batches"] = [r[:2] for r in log.rows] == [r[:2] for r in default_rows]
    del model

    if not args.quick:
        for name, (overrides, label) in ABLATIONS.items():
            run_hf_mtl(name, f"defaults but {label}", overrides)

    # Inference
    torch.set_num_threads(threads)
    texts = real_sentences(args.sentences or (128 if args.quick else 1000))
    chunks = 2 if args.quick else 5
    model = multitask_model().eval()
    reset_peak_rss()
    naive_rates = timed_chunks(lambda chunk: naive_inference(model, tokenizer, chunk), texts, chunks)
    naive_rss = peak_rss_mib()
    pipe = transformers.pipeline("multitask", model=model, tokenizer=tokenizer)
    reset_peak_rss()
    joint_rates = timed_chunks(lambda chunk: pipe(chunk), texts, chunks)
    results["inference"] = {
        "sentences": len(texts),
        "naive_forward": {**spread(naive_rates), "peak_rss_mib": naive_rss},
        "pipeline": {**spread(joint_rates), "peak_rss_mib": peak_rss_mib()},
    }
    print(results["inference"])
    return report(results, args)


def ratio_line(name: str, value: float, target: float | None, applies: bool = True) -> str:
    if target is None:
        return f"- {name} = **{value:.2f}×**"
    verdict = ("met" if value >= target else "missed") if applies else "does not apply on this CPU"
    return f"- {name} = **{value:.2f}×** (target ≥ {target:g}: {verdict})"


def report(results: dict, args) -> int:
    modes, machine = results["modes"], results["machine"]
    median = {name: mode["examples_per_second"]["median"] for name, mode in modes.items()}
    amx = machine["amx_bf16"]
    inference = results["inference"]
    ratios = {"b/a": median["defaults"] / median["naive"], "b/d": median["defaults"] / median["plain"]}
    if "bf16" in modes:
        ratios["c/a"] = median["bf16"] / median["naive"]
        ratios["c/b"] = median["bf16"] / median["defaults"]
    ratios["inference"] = inference["pipeline"]["median"] / inference["naive_forward"]["median"]
    results["ratios"] = ratios
    results["command"] = "python benchmarks/throughput.py" + (" --quick" if args.quick else "")
    results["date"] = time.strftime("%Y-%m-%d")
    peaks = results["matmul_peak_gflops"]
    lines = [
        f"Command: `{results['command']}` ({results['date']}; {machine['cpu']}, {machine['threads']} threads, "
        f"CPU capability {machine['capability']}, AMX-BF16 {'yes' if amx else 'no'}, AVX512-BF16 "
        f"{'yes' if machine['avx512_bf16'] else 'no'}; 2048³ matmul {peaks['float32']:.0f} GFLOP/s fp32, "
        f"{peaks['bfloat16']:.1f} GFLOP/s bf16). Training rows: SST-2 + WNUT-17 train, equal mixing; "
        f"same batches for (b) and (d): {'yes' if results['same_batches'] else 'NO'}.",
        "",
        "| mode | batch | training examples/s (min / median / max) | real tokens/s | padding | "
        "model GFLOP/s (% of peak) | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, mode in modes.items():
        rate = mode["examples_per_second"]
        lines.append(
            f"| {name}: {mode['label']} | {mode['batch_size']} | {rate['min']:.1f} / {rate['median']:.1f} / "
            f"{rate['max']:.1f} | {mode['tokens_per_second']['median']:.0f} | {mode['padding_fraction']:.0%} | "
            f"{mode['flops']['median'] / 1e9:.1f} ({mode['peak_fraction']:.1%}) | {mode['peak_rss_mib']:.0f} |"
        )
    naive, joint = inference["naive_forward"], inference["pipeline"]
    lines += [
        "",
        f"Inference, {inference['sentences']} sentences (SST-2 dev, then WNUT-17 dev/test), sentences/s "
        "(min / median / max over chunks):",
        "",
        "| inference | sentences/s | peak RSS (MiB) |",
        "|---|---|---|",
        f"| naive forward: pad 128, batch 4, fp32 | {naive['min']:.1f} / {naive['median']:.1f} / {naive['max']:.1f} "
        f"| {naive['peak_rss_mib']:.0f} |",
        f'| `pipeline("multitask")`, defaults (all heads decoded) | {joint["min"]:.1f} / {joint["median"]:.1f} / '
        f"{joint['max']:.1f} | {joint['peak_rss_mib']:.0f} |",
        "",
        "Ratios of median training examples/s:",
        ratio_line("b/a, defaults / naive", ratios["b/a"], 5),
    ]
    if "c/a" in ratios:
        lines += [
            ratio_line("c/a, bf16 / naive", ratios["c/a"], 10, applies=amx),
            ratio_line("c/b, bf16 / defaults", ratios["c/b"], None),
        ]
    lines += [
        ratio_line("b/d, defaults / plain single-task Trainer", ratios["b/d"], 0.95),
        ratio_line("inference, pipeline / naive forward", ratios["inference"], 5),
        "",
        "Model FLOPs per trained sequence of t real tokens: 6·P·t + 12·L·d·t² (P: weights of the per-token matrix "
        "multiplies, L layers, hidden size d); achieved FLOP/s counts real tokens only, as a share of the 2048³ "
        "matmul of the same dtype.",
    ]
    if "defaults" in modes:
        lines.append(
            f"Data loading (collation in the training process) took {modes['defaults']['loading_share']:.1%}"
            " of the defaults' training time."
        )
    table = "\n".join(lines)
    return finish(args, results, table, "throughput", "Training and inference speed on the CPU")


if __name__ == "__main__":
    sys.exit(main())
