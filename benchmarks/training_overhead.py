#!/usr/bin/env python
"""Does hf_mtl's training loop cost anything over the plain Trainer? (b) against (d) of `throughput.py`, measured so
that the order does not matter, plus a profile of one training step of each.

(b) is `MultiTaskTrainer` with hf_mtl's defaults on the multi-task model, except that each batch runs whole
(`--sorted_micro_batches 1`: the CPU default of 2 would cut the padding (d) pays, and this measures the loop, not the
padding); (d) the plain `Trainer` with a single-task `AutoModelForTokenClassification` on exactly the same batches
(the rows, batches and timing windows of `throughput.py`). Each measurement is its own process, in the order b d d b
(twice by default: b d d b b d d b), so
that allocator state, frequency drift and warm caches favour neither side; the ratio is the median of (b)'s window
rates over the median of (d)'s. Then one process per mode profiles one step (after the windows) with
`torch.profiler` and the top entries by self CPU time are recorded (`--quick`: its two timed processes do).

    python benchmarks/training_overhead.py            # 8 processes of 3 windows of 20 steps, then the profiles
    python benchmarks/training_overhead.py --quick    # smoke version: b d, 1 window of 4 steps, then a profiled step
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, NEEDED, finish  # noqa: E402
from throughput import (  # noqa: E402
    CONFIG,
    CORPUS_ROWS,
    WARMUP_STEPS,
    BatchLog,
    cpu_description,
    load_corpus,
    model_flop_constants,
    plain_token_corpus,
    same_batches_trainer,
    trainer_training,
    windows,
)

MODES = ("defaults", "plain")
PROFILE_ROWS = 8

# Both sides train each batch whole: the loop's cost is measured, not the padding (the plain Trainer ignores it).
WHOLE_BATCHES = {"sorted_micro_batches": 1}


def one_mode(mode: str, n_windows: int, window_steps: int, profile: bool) -> dict:
    """Trains (b) or (d) for warm-up + `n_windows` windows and returns its window rates (and, with `profile`, the
    profile of one more step after them; with no windows, the profile of the step after the warm-up alone)."""
    import datasets
    import torch
    import transformers
    import yaml
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, TrainerCallback

    from hf_mtl import MultiTaskModel, MultiTaskTrainer, load_tokenizer
    from hf_mtl.data.collator import MultiTaskDataCollator
    from hf_mtl.packaged_encoder import MINILM, resolve_encoder
    from hf_mtl.tasks import parse_tasks

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    encoder = resolve_encoder(MINILM.hub_id)
    tokenizer = load_tokenizer(encoder)
    tasks = parse_tasks(yaml.safe_load(CONFIG.read_text())["tasks"])
    corpus = load_corpus(tokenizer, tasks, rows=CORPUS_ROWS)
    timed_steps = WARMUP_STEPS + n_windows * window_steps
    steps = timed_steps + (1 if profile else 0)
    callbacks = []
    table: list[str] = []
    if profile:

        class ProfileLastStep(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == steps - 1:
                    self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                    self.profiler.__enter__()

            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == steps:
                    self.profiler.__exit__(None, None, None)
                    averages = self.profiler.key_averages()
                    total = sum(event.self_cpu_time_total for event in averages)
                    for event in sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:PROFILE_ROWS]:
                        table.append(
                            f"{event.key}: {event.self_cpu_time_total / 1e3:.1f} ms "
                            f"({event.self_cpu_time_total / total:.0%}), {event.count} calls"
                        )
                    table.append(f"total self CPU time: {total / 1e3:.1f} ms")

        callbacks.append(ProfileLastStep())

    if mode == "defaults":
        model = MultiTaskModel.from_encoder(encoder, [t.to_dict() for t in tasks], sentence_pooling="mean")
        collator = MultiTaskDataCollator(tokenizer, [t.label_key for t in tasks if t.is_token_task])
        trainer_class = MultiTaskTrainer
    else:
        ner = next(task for task in tasks if task.is_token_task)
        trainer_class = same_batches_trainer(corpus, [t.label_key for t in tasks])
        corpus = plain_token_corpus(corpus)
        model = AutoModelForTokenClassification.from_pretrained(encoder, num_labels=len(ner.labels))
        collator = DataCollatorForTokenClassification(tokenizer)
    if callbacks:
        trainer_class = _with_callbacks(trainer_class, callbacks)
    log = BatchLog(*model_flop_constants(model))
    run = trainer_training(trainer_class, model, WHOLE_BATCHES, corpus, collator, steps, log)
    if not n_windows:
        return {"mode": mode, "profile": table}
    ends = run["step_ends"][: timed_steps + 1]  # the profiled step is not timed
    log.rows = log.rows[:timed_steps]
    measured = windows(ends, log, window_steps)
    seconds = [ends[k + window_steps] - ends[k] for k in range(WARMUP_STEPS, len(ends) - window_steps, window_steps)]
    return {
        "mode": mode,
        "examples_per_second": measured["examples_per_second"],
        "window_seconds": seconds,
        "batches": [r[:2] for r in log.rows],
        **({"profile": table} if profile else {}),
    }


def interleaved(steps: int) -> dict:
    """(b) and (d) in one process, step by step on the same batch: each step of each is timed from the loss-kwargs
    count to the optimizer step (the Trainer's `training_step`, gradient clipping, `optimizer.step`, scheduler,
    `zero_grad`), in the order b d, d b, b d, ... so that drift and warm caches fall on both alike. Returns each
    step's seconds per mode."""
    import datasets
    import torch
    import transformers
    import yaml
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

    from hf_mtl import MultiTaskModel, MultiTaskTrainer, load_tokenizer
    from hf_mtl.arguments import MultiTaskTrainingArguments
    from hf_mtl.data.collator import MultiTaskDataCollator
    from hf_mtl.data.sampling import training_sampler
    from hf_mtl.packaged_encoder import MINILM, resolve_encoder
    from hf_mtl.tasks import parse_tasks

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    encoder = resolve_encoder(MINILM.hub_id)
    tokenizer = load_tokenizer(encoder)
    tasks = parse_tasks(yaml.safe_load(CONFIG.read_text())["tasks"])
    ner = next(task for task in tasks if task.is_token_task)
    corpus = load_corpus(tokenizer, tasks, rows=CORPUS_ROWS)
    plain_corpus = plain_token_corpus(corpus)
    output_dir = tempfile.mkdtemp()
    args = MultiTaskTrainingArguments(
        output_dir=output_dir, learning_rate=2e-4, report_to="none", save_strategy="no", **WHOLE_BATCHES
    )
    torch.manual_seed(0)
    order = list(training_sampler(corpus, args, [t.label_key for t in tasks]))
    size = args.per_device_train_batch_size
    chunks = [order[i : i + size] for i in range(0, len(order), size)][: WARMUP_STEPS + steps]
    multitask_collator = MultiTaskDataCollator(tokenizer, [t.label_key for t in tasks if t.is_token_task])
    plain_collator = DataCollatorForTokenClassification(tokenizer)
    torch.manual_seed(0)
    multitask = MultiTaskModel.from_encoder(encoder, [t.to_dict() for t in tasks], sentence_pooling="mean")
    torch.manual_seed(0)
    plain = AutoModelForTokenClassification.from_pretrained(encoder, num_labels=len(ner.labels))
    trainers = {
        "defaults": (MultiTaskTrainer(model=multitask, args=args), multitask_collator, corpus),
        "plain": (transformers.Trainer(model=plain, args=args), plain_collator, plain_corpus),
    }
    for trainer, _, _ in trainers.values():
        trainer.create_optimizer_and_scheduler(num_training_steps=len(chunks))
        trainer.current_gradient_accumulation_steps = 1
        trainer.model.train()
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    for step, chunk in enumerate(chunks):
        modes = MODES if step % 2 == 0 else MODES[::-1]
        for mode in modes:
            trainer, collator, rows = trainers[mode]
            batch = collator([{k: v for k, v in rows[i].items() if k != "length"} for i in chunk])
            started = time.perf_counter()
            num_items = trainer._get_num_items_in_batch([batch], trainer.args.device)
            trainer.training_step(trainer.model, batch, num_items)
            torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
            trainer.model.zero_grad()
            if step >= WARMUP_STEPS:
                seconds[mode].append(time.perf_counter() - started)
    return {"step_seconds": seconds, "steps": steps}


def _with_callbacks(trainer_class, callbacks):
    class WithCallbacks(trainer_class):
        def __init__(self, *args, **kwargs):
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + callbacks
            super().__init__(*args, **kwargs)

    return WithCallbacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="b d d b rounds (default 2; quick: one b d)")
    parser.add_argument("--windows", type=int, default=None, help="timed windows per process (default 3)")
    parser.add_argument("--window_steps", type=int, default=None, help="steps per window (default 20)")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--docs", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=None, help="interleaved steps per mode (default 60, quick 4)")
    parser.add_argument(
        "--only_interleaved", action="store_true", help="only the interleaved step-by-step comparison (prints it)"
    )
    parser.add_argument("--one_mode", choices=MODES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n_windows = args.windows if args.windows is not None else (1 if args.quick else 3)
    window_steps = args.window_steps or (4 if args.quick else 20)
    if args.one_mode:
        print("RESULT " + json.dumps(one_mode(args.one_mode, n_windows, window_steps, args.profile)), flush=True)
        return 0
    missing = [name for name in NEEDED if not (DATA / name).is_file()]
    if missing:
        print(f"SKIPPED: the real corpora are not available ({DATA / missing[0]} is missing); see ../shared/data")
        return 0
    if args.only_interleaved:
        step_seconds = interleaved(args.steps or (4 if args.quick else 60))["step_seconds"]
        total = {mode: sum(values) for mode, values in step_seconds.items()}
        print(
            f"interleaved: d/b = {total['plain']:.2f} s / {total['defaults']:.2f} s = "
            f"{total['plain'] / total['defaults']:.3f}x"
        )
        return 0

    def child(mode: str, profile: bool = False, timed: bool = True) -> dict:
        command = [sys.executable, __file__, "--one_mode", mode, "--windows", str(n_windows if timed else 0)]
        command += ["--window_steps", str(window_steps)] + (["--profile"] if profile else [])
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
        return json.loads(line[len("RESULT ") :])

    order = ["defaults", "plain"] if args.quick else ["defaults", "plain", "plain", "defaults"] * (args.rounds or 2)
    runs = []
    for mode in order:
        runs.append(child(mode, profile=args.quick))  # quick: the same processes profile a step after the windows
        rate = runs[-1]["examples_per_second"]
        print(f"{mode:>9}: {rate['min']:.1f} / {rate['median']:.1f} / {rate['max']:.1f} ex/s", flush=True)
    same_batches = all(run["batches"] == runs[0]["batches"] for run in runs)
    medians = {mode: [run["examples_per_second"]["median"] for run in runs if run["mode"] == mode] for mode in MODES}
    ratio = statistics.median(medians["defaults"]) / statistics.median(medians["plain"])
    # Paired by window: window k holds the same batches in every process, so its time compares like with like.
    window_medians = {
        mode: [statistics.median(times) for times in zip(*(r["window_seconds"] for r in runs if r["mode"] == mode))]
        for mode in MODES
    }
    paired = sum(window_medians["plain"]) / sum(window_medians["defaults"])
    if args.quick:
        profiles = {run["mode"]: run["profile"] for run in runs}
    else:  # a process of its own per mode, after the timed ones
        profiles = {mode: child(mode, profile=True, timed=False)["profile"] for mode in MODES}
    steps = args.steps or (4 if args.quick else 60)
    step_seconds = interleaved(steps)["step_seconds"]
    step_ratios = [d / b for b, d in zip(step_seconds["defaults"], step_seconds["plain"])]
    interleaved_ratio = sum(step_seconds["plain"]) / sum(step_seconds["defaults"])
    machine = cpu_description()
    command = "python benchmarks/training_overhead.py" + (" --quick" if args.quick else "")
    command += f" --rounds {args.rounds}" if args.rounds else ""
    lines = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}; {machine['cpu']}, {machine['threads']} threads). "
        f"One process per measurement, in the order {' '.join('b' if m == 'defaults' else 'd' for m in order)}; "
        f"each {n_windows} window(s) of {window_steps} steps after {WARMUP_STEPS} warm-up steps; same batches in "
        f"every process: {'yes' if same_batches else 'NO'}.",
        "",
        "| process | mode | examples/s (min / median / max over windows) |",
        "|---|---|---|",
    ]
    for index, run in enumerate(runs, 1):
        rate = run["examples_per_second"]
        label = "(b) hf_mtl defaults" if run["mode"] == "defaults" else "(d) plain Trainer"
        lines.append(f"| {index} | {label} | {rate['min']:.1f} / {rate['median']:.1f} / {rate['max']:.1f} |")
    lines += [
        "",
        f"b/d, paired by window (the same batches): (d)'s time over (b)'s, summed over the windows of each mode's "
        f"median process = {sum(window_medians['plain']):.2f} s / {sum(window_medians['defaults']):.2f} s = "
        f"**{paired:.3f}×** (target ≥ 1.0: {'met' if paired >= 1.0 else 'missed'}). Median of (b)'s process "
        f"medians over (d)'s: {statistics.median(medians['defaults']):.1f} / "
        f"{statistics.median(medians['plain']):.1f} ex/s = {ratio:.3f}×.",
        "",
        f"Interleaved in one process, step by step on the same batch (b d, d b, ...; {steps} steps each after "
        f"{WARMUP_STEPS} warm-up steps, each timed from the loss-kwargs count to `zero_grad`): (d)'s total time "
        f"over (b)'s = {sum(step_seconds['plain']):.2f} s / {sum(step_seconds['defaults']):.2f} s = "
        f"**{interleaved_ratio:.3f}×** (target ≥ 1.0: {'met' if interleaved_ratio >= 1.0 else 'missed'}); per-step "
        f"ratios d/b: median {statistics.median(step_ratios):.3f}, min {min(step_ratios):.3f}, "
        f"max {max(step_ratios):.3f}.",
        "",
        "Top entries of one profiled training step (self CPU time), (b) then (d):",
        "",
    ]
    for mode in MODES:
        lines += [f"- {'(b) hf_mtl defaults' if mode == 'defaults' else '(d) plain Trainer'}:"]
        lines += [f"  - {entry}" for entry in profiles[mode]]
    results = {
        "command": command,
        "machine": machine,
        "order": order,
        "runs": [{k: v for k, v in run.items() if k != "batches"} for run in runs],
        "same_batches": same_batches,
        "ratio_b_over_d": ratio,
        "ratio_b_over_d_paired_by_window": paired,
        "interleaved": {"step_seconds": step_seconds, "ratio_b_over_d": interleaved_ratio},
        "profiles": profiles,
    }
    return finish(args, results, "\n".join(lines), "training_overhead", "Training overhead over the plain Trainer")


if __name__ == "__main__":
    sys.exit(main())
