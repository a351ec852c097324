#!/usr/bin/env python
"""Does one multi-task model do as well as two single-task models, for less compute?

Runs `run_mtl.py configs/sst2_wnut17.yaml` on the real corpora in ../shared/data with the packaged MiniLM:
(a) single-task sentiment (`--only_tasks sentiment`: SST-2 only), (b) single-task NER (`--only_tasks ner`:
WNUT-17 only), (c) multi-task on both, each over several seeds with the same encoder, hyperparameters and number
of optimizer steps; then (c) again with each mixing strategy (proportional, temperature T=2, equal) for one seed.
Reports SST-2 dev accuracy, WNUT-17 dev and test entity F1 and training wall time, mean and std over seeds.

    python benchmarks/quality.py            # the full run (about 45 minutes on 2 cores), updates docs/BENCHMARKS.md
    python benchmarks/quality.py --quick    # a smoke version on the same data, a few minutes
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

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CONFIG = "configs/sst2_wnut17.yaml"
NEEDED = [
    "sst2_glue/train.tsv",
    "sst2_glue/dev.tsv",
    "wnut17/wnut17train.conll",
    "wnut17/emerging.dev.conll",
    "wnut17/emerging.test.annotated",
]
METRICS = {
    "sst2_dev_accuracy": "eval_sentiment_accuracy",
    "wnut17_dev_f1": "eval_ner_f1",
    "wnut17_test_f1": "test_ner_f1",
    "train_seconds": "train_runtime",
}
RUNS = {
    "single_sentiment": ["--only_tasks", "sentiment", "--do_predict", "false"],
    "single_ner": ["--only_tasks", "ner"],
    "multi_task": [],
}
# The speed settings against the previous defaults, on the multi-task run (`--speed_settings`). Each names
# every setting, so that the CPU's own bf16 default does not decide the comparison.
SPEED_SETTINGS = {
    "fp32, random batches": ["--bf16", "false", "--train_sampling_strategy", "random"],
    "fp32, length-grouped batches": ["--bf16", "false", "--train_sampling_strategy", "group_by_length"],
    "bf16, length-grouped batches": ["--bf16", "true", "--train_sampling_strategy", "group_by_length"],
}
MIXING = {
    "proportional": ["--mixing_strategy", "proportional"],
    "temperature_2": ["--mixing_strategy", "temperature", "--mixing_temperature", "2"],
    "equal": ["--mixing_strategy", "equal"],
}


def _config_mixing() -> str:
    import yaml

    config = yaml.safe_load((ROOT / CONFIG).read_text())
    strategy = config.get("mixing_strategy", "proportional")
    return "temperature_2" if strategy == "temperature" and config.get("mixing_temperature", 2.0) == 2 else strategy


CONFIG_MIXING = _config_mixing()


def run(name: str, extra: list[str], seed: int, steps: int, limits: list[str], workdir: Path) -> dict:
    output_dir = workdir / f"{name}-seed{seed}"
    command = [
        sys.executable,
        "run_mtl.py",
        CONFIG,
        "--output_dir",
        str(output_dir),
        "--max_steps",
        str(steps),
        "--seed",
        str(seed),
        "--disable_tqdm",
        "true",
        "--eval_strategy",
        "no",
        *limits,
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} (seed {seed}) failed:\n{' '.join(command)}\n{result.stderr[-3000:]}")
    metrics = json.loads((output_dir / "all_results.json").read_text())
    row = {key: metrics[source] for key, source in METRICS.items() if source in metrics}
    row.update(run=name, seed=seed, steps=steps, process_seconds=round(time.perf_counter() - started, 1))
    print(json.dumps(row), flush=True)
    return row


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for key in METRICS:
        values = [row[key] for row in rows if key in row]
        if values:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[key] = {"mean": statistics.fmean(values), "std": std, "n": len(values)}
    return summary


def fmt(cell: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if not cell:
        return "–"
    return f"{cell['mean'] * scale:.{digits}f} ± {cell['std'] * scale:.{digits}f}"


def markdown(results: dict) -> str:
    s = results["summary"]
    lines = [
        f"Command: `{results['command']}` (run from the repository root; {results['date']}, 2-core CPU, "
        f"{results['steps']} steps of batch 16, seeds {results['seeds']}).",
        "",
        "| run | SST-2 dev accuracy | WNUT-17 dev F1 | WNUT-17 test F1 | train wall time (s) |",
        "|---|---|---|---|---|",
    ]
    for name in RUNS:
        cell = s[name]
        lines.append(
            f"| {name} | {fmt(cell.get('sst2_dev_accuracy'))} | {fmt(cell.get('wnut17_dev_f1'))} | "
            f"{fmt(cell.get('wnut17_test_f1'))} | {fmt(cell.get('train_seconds'), 1, 0)} |"
        )
    t = results["targets"]
    lines += [
        "",
        "Scores are percentages, mean ± std over seeds. Targets:",
        f"- sentiment: multi-task − single-task = {t['sentiment_delta_points']:+.2f} points (target ≥ −0.5): "
        f"{'met' if t['sentiment_delta_points'] >= -0.5 else 'missed'}",
        f"- NER (dev F1): multi-task − single-task = {t['ner_dev_delta_points']:+.2f} points (target ≥ −0.5): "
        f"{'met' if t['ner_dev_delta_points'] >= -0.5 else 'missed'}; test F1: {t['ner_test_delta_points']:+.2f}",
        f"- wall time: multi-task / (single sentiment + single NER) = {t['time_ratio']:.2f} (target ≤ 0.60): "
        f"{'met' if t['time_ratio'] <= 0.60 else 'missed'}",
        "",
        f"Mixing strategies (multi-task, seed {results['seeds'][0]}):",
        "",
        "| strategy | NER share of the stream | SST-2 dev accuracy | WNUT-17 dev F1 | WNUT-17 test F1 "
        "| train wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["mixing"].items():
        lines.append(
            f"| {name} | {row['ner_share']:.2f} | {row['sst2_dev_accuracy'] * 100:.1f} | "
            f"{row['wnut17_dev_f1'] * 100:.1f} | {row['wnut17_test_f1'] * 100:.1f} | "
            f"{row['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def finish(args, results: dict, table: str, key: str, title: str) -> int:
    """Prints `table`; a full run (not `--quick`) also writes benchmarks/results/{key}.json and its docs section,
    unless `--output` / `--docs` say where instead."""
    print(table)
    output = args.output or (None if args.quick else ROOT / "benchmarks" / "results" / f"{key}.json")
    docs = args.docs or (None if args.quick else ROOT / "docs" / "BENCHMARKS.md")
    save_results(results, table, output, docs, key, title)
    return 0


def save_results(results: dict, table: str, output: Path | None, docs: Path | None, key: str, title: str) -> None:
    """Writes the results JSON (when `output` is set) and the table into `docs` (when set)."""
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
    if docs is not None:
        update_docs(docs, table, key, title)


def update_docs(
    path: Path, body: str, key: str = "quality", title: str = "Multi-task vs single-task quality (SST-2 + WNUT-17)"
) -> None:
    """Replaces (or appends) the section between `<!-- key:start -->` and `<!-- key:end -->`."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke version: 1 seed, 8 steps, capped eval sets")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 300, quick 8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON (default benchmarks/results/quality.json; quick: a temporary file)",
    )
    parser.add_argument("--docs", type=Path, default=None, help="markdown to update (default docs/BENCHMARKS.md)")
    parser.add_argument(
        "--speed_settings",
        action="store_true",
        help="instead: the multi-task run with fp32 random batches, fp32 length-grouped and bf16 length-grouped",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=list(SPEED_SETTINGS),
        default=None,
        help="with --speed_settings: only these settings (default all; emulated bf16 is slow on CPUs without AMX)",
    )
    args = parser.parse_args(argv)

    missing = [name for name in NEEDED if not (DATA / name).is_file()]
    if missing:
        print(
            f"SKIPPED: the real corpora are not available ({DATA / missing[0]} is missing); "
            "they live in ../shared/data beside the repository"
        )
        return 0
    steps = args.steps or (8 if args.quick else 300)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    limits = ["--max_eval_samples", "64", "--max_predict_samples", "64"] if args.quick else []
    output = args.output or (
        Path(tempfile.mkdtemp()) / "quality.json" if args.quick else ROOT / "benchmarks" / "results" / "quality.json"
    )
    docs = args.docs or (None if args.quick else ROOT / "docs" / "BENCHMARKS.md")

    if args.speed_settings:
        return speed_settings(args, steps, seeds, limits)

    from hf_mtl.data.mixing import mixing_probabilities

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = [run(name, extra, seed, steps, limits, workdir) for seed in seeds for name, extra in RUNS.items()]
        sizes = [67349, 3394]  # SST-2 train rows, WNUT-17 train sentences
        mixing = {}
        for name, extra in MIXING.items():
            strategy = extra[1]
            row = next((r for r in rows if r["run"] == "multi_task" and r["seed"] == seeds[0]), None)
            if name != CONFIG_MIXING or row is None:  # the config's own strategy is the multi_task run
                row = run(f"mixing_{name}", extra, seeds[0], steps, limits, workdir)
            mixing[name] = {**row, "ner_share": mixing_probabilities(sizes, strategy, 2.0)[1]}

    summary = {name: summarise([r for r in rows if r["run"] == name]) for name in RUNS}
    single_time = summary["single_sentiment"]["train_seconds"]["mean"] + summary["single_ner"]["train_seconds"]["mean"]
    targets = {
        "sentiment_delta_points": 100
        * (
            summary["multi_task"]["sst2_dev_accuracy"]["mean"]
            - summary["single_sentiment"]["sst2_dev_accuracy"]["mean"]
        ),
        "ner_dev_delta_points": 100
        * (summary["multi_task"]["wnut17_dev_f1"]["mean"] - summary["single_ner"]["wnut17_dev_f1"]["mean"]),
        "ner_test_delta_points": 100
        * (summary["multi_task"]["wnut17_test_f1"]["mean"] - summary["single_ner"]["wnut17_test_f1"]["mean"]),
        "time_ratio": summary["multi_task"]["train_seconds"]["mean"] / single_time,
    }
    command = "python benchmarks/quality.py" + (" --quick" if args.quick else "")
    results = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "config": CONFIG,
        "steps": steps,
        "seeds": seeds,
        "runs": rows,
        "summary": summary,
        "targets": targets,
        "mixing": mixing,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    print(table)
    print(f"results: {output}")
    if docs is not None:
        update_docs(docs, table)
        print(f"updated: {docs}")
    return 0


def speed_settings(args, steps: int, seeds: list[int], limits: list[str]) -> int:
    """Does the speed of length-grouped batches and bf16 cost accuracy? The multi-task run, per setting and seed."""
    settings = args.settings or list(SPEED_SETTINGS)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            {**run(f"speed_{index}", extra, seed, steps, limits, Path(tmp)), "setting": name}
            for seed in seeds
            for index, (name, extra) in enumerate(SPEED_SETTINGS.items())
            if name in settings
        ]
    summary = {name: summarise([r for r in rows if r["setting"] == name]) for name in settings}
    command = "python benchmarks/quality.py --speed_settings" + (" --quick" if args.quick else "")
    command += f" --steps {steps} --seeds {' '.join(map(str, seeds))}" if not args.quick else ""
    command += " --settings " + " ".join(repr(name) for name in settings) if args.settings else ""
    reference = summary[settings[0]]
    lines = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {steps} steps of batch 16, seeds {seeds}; "
        "the multi-task run of `configs/sst2_wnut17.yaml`).",
        "",
        "| setting | SST-2 dev accuracy | WNUT-17 dev F1 | WNUT-17 test F1 | train wall time (s) | "
        "Δ accuracy / Δ dev F1 vs the first row (points) |",
        "|---|---|---|---|---|---|",
    ]
    for name, cell in summary.items():
        delta = [100 * (cell[k]["mean"] - reference[k]["mean"]) for k in ("sst2_dev_accuracy", "wnut17_dev_f1")]
        lines.append(
            f"| {name} | {fmt(cell.get('sst2_dev_accuracy'))} | {fmt(cell.get('wnut17_dev_f1'))} | "
            f"{fmt(cell.get('wnut17_test_f1'))} | {fmt(cell.get('train_seconds'), 1, 0)} | "
            f"{delta[0]:+.1f} / {delta[1]:+.1f} |"
        )
    table = "\n".join(lines)
    results = {"command": command, "steps": steps, "seeds": seeds, "runs": rows, "summary": summary}
    key, title = "speed_settings", "Do the speed settings cost accuracy?"
    if args.quick:
        key, title = "speed_settings_quick", "Do the speed settings cost accuracy? (quick benchmark)"
    return finish(args, results, table, key, title)


if __name__ == "__main__":
    sys.exit(main())
