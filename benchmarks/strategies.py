#!/usr/bin/env python
"""Loss-weighting ablation: static, uncertainty, dwa and pcgrad on SST-2 + WNUT-17, same budget.

Each strategy trains the multi-task model of `configs/sst2_wnut17.yaml` (packaged MiniLM, the config's steps,
batch and learning rate) with `--loss_weighting <strategy> --log_grad_cosine`; reported: SST-2 dev accuracy,
WNUT-17 dev/test entity F1, the final task weights, the mean gradient cosine, and wall time per step relative to
`static`.

    python benchmarks/strategies.py                 # seed 0 (add --seeds 0 1 2 where time allows)
    python benchmarks/strategies.py --quick         # smoke version
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, NEEDED, finish, fmt, run, summarise  # noqa: E402

STRATEGIES = ("static", "uncertainty", "dwa", "pcgrad")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="default 300 (quick: 6)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--docs", type=Path, default=None)
    args = parser.parse_args(argv)
    missing = [name for name in NEEDED if not (DATA / name).is_file()]
    if missing:
        print(f"SKIPPED: the real corpora are not available ({DATA / missing[0]} is missing)")
        return 0
    steps = args.steps or (6 if args.quick else 300)
    limits = ["--max_eval_samples", "64", "--max_predict_samples", "64"] if args.quick else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for strategy in STRATEGIES:
                extra = ["--loss_weighting", strategy, "--log_grad_cosine", "--logging_steps", str(min(25, steps))]
                row = run(strategy, extra, seed, steps, limits, Path(tmp))
                state = json.loads((Path(tmp) / f"{strategy}-seed{seed}" / "trainer_state.json").read_text())
                logs = [entry for entry in state["log_history"] if "weight_ner" in entry]
                row["weight_sentiment"], row["weight_ner"] = logs[-1]["weight_sentiment"], logs[-1]["weight_ner"]
                cosines = [entry["grad_cosine"] for entry in logs if "grad_cosine" in entry]
                row["grad_cosine"] = statistics.fmean(cosines) if cosines else None
                rows.append(row)
    summary = {s: summarise([r for r in rows if r["run"] == s]) for s in STRATEGIES}
    base = summary["static"]["train_seconds"]["mean"]
    lines = [
        f"Command: `python benchmarks/strategies.py{' --quick' if args.quick else ''}` ({time.strftime('%Y-%m-%d')}, "
        f"{steps} steps of batch 16, seeds {args.seeds}; the same budget and hyperparameters for every strategy; "
        "`--log_grad_cosine` on in every run, so every 25th step pays one extra backward pass per task).",
        "",
        "| strategy | SST-2 dev accuracy | WNUT-17 dev F1 | WNUT-17 test F1 | final weights (sentiment / ner) "
        "| mean grad cosine | time per step vs static |",
        "|---|---|---|---|---|---|---|",
    ]
    for strategy in STRATEGIES:
        cell, last = summary[strategy], [r for r in rows if r["run"] == strategy][-1]
        cosine = f"{last['grad_cosine']:+.3f}" if last["grad_cosine"] is not None else "–"
        lines.append(
            f"| {strategy} | {fmt(cell.get('sst2_dev_accuracy'))} | {fmt(cell.get('wnut17_dev_f1'))} | "
            f"{fmt(cell.get('wnut17_test_f1'))} | {last['weight_sentiment']:.2f} / {last['weight_ner']:.2f} | "
            f"{cosine} | {cell['train_seconds']['mean'] / base:.2f}× |"
        )
    table = "\n".join(lines)
    results = {"steps": steps, "seeds": args.seeds, "runs": rows, "summary": summary}
    return finish(args, results, table, "strategies", "Loss weighting strategies (SST-2 + WNUT-17)")


if __name__ == "__main__":
    sys.exit(main())
