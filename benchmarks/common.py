"""What the benchmarks share: where the repository and the real corpora are, the CPU's name, a `run_mtl.py` run with
a fixed step budget on `configs/sst2_wnut17.yaml`, mean ± std summaries, and writing results (JSON + a docs
section)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
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


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers (`AMD EPYC (family 26, model 2)`): machines that share
    a name differ in speed, and figures are compared only on one of them."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    fields = {
        key: re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE) for key in ("model name", "cpu family", "model")
    }
    if fields["model name"] is None:
        return "unknown"
    name = fields["model name"].group(1).strip()
    if fields["cpu family"] and fields["model"]:
        name += f" (family {fields['cpu family'].group(1).strip()}, model {fields['model'].group(1).strip()})"
    return name


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
