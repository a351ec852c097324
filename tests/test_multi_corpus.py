"""Two corpora, each labelled for one task: per-corpus evaluation, merged metrics, single-task baselines."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModel

from hf_mtl import parse_tasks
from hf_mtl.metrics import merge_dataset_metrics
from run_mtl import main
from tests.conftest import SHARED_DATA, run_quick_benchmark

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max_steps", "4", "--logging_steps", "2", "--learning_rate", "1e-3", "--disable_tqdm", "true"]


def test_merge_dataset_metrics_maps_each_task_to_its_corpus():
    tasks = parse_tasks(None)
    metrics = {
        "eval_sst_sentiment_accuracy": 0.8,
        "eval_sst_sentiment_loss": 0.4,
        "eval_sst_loss": 0.4,
        "eval_conll_ner_f1": 0.5,
        "eval_conll_ner_PER_f1": 0.6,
        "eval_conll_combined_score": 0.5,
    }
    merged = merge_dataset_metrics(metrics, "eval", ["sst", "conll"], tasks)
    assert merged == {
        "eval_sentiment_accuracy": 0.8,
        "eval_sentiment_loss": 0.4,
        "eval_ner_f1": 0.5,
        "eval_ner_PER_f1": 0.6,
        "eval_combined_score": pytest.approx(0.65),
    }
    two = merge_dataset_metrics(
        {"eval_a_sentiment_accuracy": 0.6, "eval_b_sentiment_accuracy": 0.8}, "eval", ["a", "b"], tasks
    )
    assert two == {"eval_sentiment_accuracy": pytest.approx(0.7), "eval_combined_score": pytest.approx(0.7)}


def test_each_corpus_is_evaluated_on_its_own_and_merged(two_corpora, tmp_path):
    output_dir = tmp_path / "mtl"
    metrics = main([str(two_corpora), "--output_dir", str(output_dir), *FAST])
    for key in (
        "eval_sst_sentiment_accuracy",
        "eval_conll_ner_f1",
        "eval_sentiment_accuracy",
        "eval_ner_f1",
        "eval_combined_score",
        "eval_sentiment_loss",
        "eval_ner_loss",
        "test_ner_f1",
    ):
        assert key in metrics, key
    assert not any(key.startswith("eval_sst_ner") or key.startswith("eval_conll_sentiment") for key in metrics)
    assert metrics["eval_combined_score"] == pytest.approx(
        (metrics["eval_sentiment_accuracy"] + metrics["eval_ner_f1"]) / 2
    )
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert any("eval_combined_score" in entry for entry in history)
    records = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 20 and {r["dataset"] for r in records} == {"conll"}


def test_only_tasks_trains_a_single_task_baseline(two_corpora, tmp_path):
    output_dir = tmp_path / "ner-only"
    metrics = main([str(two_corpora), "--output_dir", str(output_dir), "--only_tasks", "ner", *FAST])
    assert "eval_ner_f1" in metrics and not any("sentiment" in key for key in metrics)
    model = AutoModel.from_pretrained(output_dir)
    assert [task.name for task in model.config.task_specs] == ["ner"] and list(model.heads) == ["ner"]
    assert metrics["train_samples"] == 20  # the sentiment corpus was left out


def test_only_tasks_rejects_an_unknown_task(two_corpora, tmp_path):
    from hf_mtl import HfMtlError

    with pytest.raises(HfMtlError, match=r"--only_tasks: unknown task\(s\) \['topic'\]"):
        main([str(two_corpora), "--output_dir", str(tmp_path / "x"), "--only_tasks", "topic"])


@pytest.mark.integration
def test_quality_benchmark_quick(tmp_path):
    output = tmp_path / "quality.json"
    result = run_quick_benchmark("quality.py", output)
    results = json.loads(output.read_text())
    # The jointly labelled corpus: (a) plain and (b) hf_mtl single-task per task, (d) multi-task.
    assert set(results["runs"]) == {
        "absa_4ep/plain/sentiment/seed0", "absa_4ep/plain/aspects/seed0", "absa_4ep/single/sentiment/seed0",
        "absa_4ep/single/aspects/seed0", "absa_4ep/multi/seed0",
    }  # fmt: skip
    multi = results["runs"]["absa_4ep/multi/seed0"]
    # 48 jointly labelled rows, each trained once per task (per-task batches, the default).
    assert multi["train_examples"] == 96 and 0 <= multi["aspects_test"] <= 1 and 0 <= multi["sentiment_test"] <= 1
    assert "aspects_dev" not in results["runs"]["absa_4ep/plain/sentiment/seed0"]
    target = results["targets"]["absa_4ep"]["aspects"]
    plain = results["runs"]["absa_4ep/plain/aspects/seed0"]
    assert target["multi_minus_plain_test_points"] == round(100 * (multi["aspects_test"] - plain["aspects_test"]), 2)
    assert "| multi |" in result.stdout
    # Resumable: a rerun into the same file trains nothing and reports the same runs.
    again = run_quick_benchmark("quality.py", output)
    assert json.loads(output.read_text())["runs"] == results["runs"] and "process_seconds" not in again.stdout


def test_quality_benchmark_runs_each_single_task_training_once(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import quality

    runs = {"sst2_wnut17_2k/plain/sentiment/seed1": {"sentiment_test": 0.8}}
    # SST-2 alone is the same run in both 6-epoch SST-2 pairs; a NER run, another seed or other epochs are not.
    twin = "sst2_wnut17_2k/plain/sentiment/seed1"
    assert quality.recorded_twin(runs, "sst2_btc", "plain", "sentiment", 1) == twin
    assert quality.recorded_twin(runs, "sst2_btc", "plain", "sentiment", 0) is None
    assert quality.recorded_twin(runs, "sst2_btc", "plain", "ner", 1) is None
    assert quality.recorded_twin(runs, "sst2_btc", "multi", None, 1) is None
    assert quality.recorded_twin(runs, "sst2_wnut17", "plain", "sentiment", 1) is None  # 4 epochs
    assert quality.single_task_inputs("sst2_btc", "ner") != quality.single_task_inputs("sst2_wnut17_2k", "ner")
    # The 4-epoch pairs share SST-2's 4-epoch run; WNUT-17's subset and every tweet are different NER runs.
    runs = {"sst2_wnut17/plain/sentiment/seed1": {"sentiment_test": 0.8}}
    twin = "sst2_wnut17/plain/sentiment/seed1"
    assert quality.recorded_twin(runs, "sst2_btc_4ep", "plain", "sentiment", 1) == twin
    assert quality.recorded_twin(runs, "sst2_wnut17_2k_4ep", "plain", "sentiment", 1) == twin
    assert quality.single_task_inputs("sst2_wnut17_2k_4ep", "ner") != quality.single_task_inputs("sst2_wnut17", "ner")
    # Token batches are random by default, so (c)'s `--train_sampling_strategy random` changes only sentence tasks:
    # (c) of a token task is its (b) run, either way round, in the same setting; (c) of a sentence task is not.
    runs = {"absa_4ep/single/aspects/seed2": {"aspects_test": 0.85}, "absa_4ep/single/sentiment/seed2": {}}
    assert quality.recorded_twin(runs, "absa_4ep", "single_random", "aspects", 2) == "absa_4ep/single/aspects/seed2"
    assert quality.recorded_twin(runs, "absa_4ep", "single_random", "sentiment", 2) is None
    assert quality.recorded_twin(runs, "absa_4ep", "single", "aspects", 2) is None  # itself, not a twin
    runs = {"sst2_btc_5ep/single_random/ner/seed2": {"ner_test": 0.7}}
    assert quality.recorded_twin(runs, "sst2_btc_5ep", "single", "ner", 2) == "sst2_btc_5ep/single_random/ner/seed2"
    assert quality.recorded_twin(runs, "sst2_btc_5ep", "multi+pooling_cls", None, 2) is None


def test_quality_benchmark_records_a_twin_under_its_own_run_name(tmp_path, monkeypatch):
    # The benchmark's loop with training replaced: (c) of the aspects is recorded as (b)'s row, under (c)'s run name
    # (the tables group rows by it), and only three trainings run.
    if not (SHARED_DATA / "semeval14_absa").is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is missing")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import quality

    trained = []

    def fake_training(setting, run_name, task, seed, config, quick, work):
        trained.append((run_name, task))
        row = {"setting": setting, "run": run_name, "task": task, "seed": seed, "train_seconds": 1.0}
        return {**row, f"{task}_test": len(trained) / 10}

    monkeypatch.setattr(quality, "execute", fake_training)
    output = tmp_path / "quality.json"
    argv = ["--quick", "--settings", "absa_4ep", "--runs", "single", "single_random", "--output", str(output)]
    assert quality.main([*argv, "--workdir", str(tmp_path / "work")]) == 0
    assert trained == [("single", "sentiment"), ("single", "aspects"), ("single_random", "sentiment")]
    runs = json.loads(output.read_text())["runs"]
    twin = runs["absa_4ep/single_random/aspects/seed0"]
    source = "absa_4ep/single/aspects/seed0"
    assert twin == {**runs[source], "run": "single_random", "same_run_as": source} and twin["aspects_test"] == 0.2


def test_quality_wnut17_subset_keeps_whole_tweets_split_at_blank_or_tab_lines(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import quality

    data, work = tmp_path / "data", tmp_path / "work"
    (data / "sst2_glue").mkdir(parents=True)
    (data / "sst2_glue" / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"s{i}\t1\n" for i in range(6)))
    (data / "wnut17").mkdir()
    # WNUT-17's training file ends most tweets with a line holding only a tab, some with an empty line.
    tweets = [f"a{i}\tO\nb{i}\tB-person" for i in range(5)]
    (data / "wnut17" / "wnut17train.conll").write_text(
        "\n\t\n".join(tweets[:3]) + "\n\n" + "\n\t\n".join(tweets[3:]) + "\n\n"
    )
    monkeypatch.setattr(quality, "DATA", data)
    monkeypatch.setattr(quality, "SST2_TRAIN_ROWS", 3)
    monkeypatch.setattr(quality, "SST2_DEV_ROWS", 2)
    monkeypatch.setattr(quality, "WNUT_TRAIN_TWEETS", 3)
    quality.prepare_data(work)

    subset = (work / "wnut17_train_3.conll").read_text().strip().split("\n\n")
    assert len(subset) == 3 and len(set(subset)) == 3 and set(subset) <= set(tweets)


@pytest.mark.integration
def test_quality_token_weights_expected_denominator_weighs_words_by_their_share(tmp_path):
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "semeval14_absa" / "restaurants_train.jsonl").is_file():
        pytest.skip(f"real data not available: {SHARED_DATA} is missing")
    command = [
        sys.executable,
        "benchmarks/quality.py",
        "--token_weights",
        "--settings",
        "absa",
        "--workdir",
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.strip("|").split(" | ") for line in result.stdout.splitlines() if line.startswith("| absa |")]
    micro = ["random, 2 sorted micro-batches", "random, 4 sorted micro-batches"]
    samplers = ["random", "length groups of 4", "length groups of 50", "length groups of 50, equal tokens"]
    assert [row[3] for row in rows] == [samplers[0], *micro, *samplers[1:]]
    padding, weights = {}, {}
    for _, task, share, sampler, labelled, expected, padded in (map(str.strip, row) for row in rows):
        assert task == "aspects"
        padding[sampler], weights[sampler] = float(padded.rstrip("%")), (labelled, expected)
        if sampler in micro:
            # The random batches cut into parts of one step: the step's loss weights, less padding.
            assert weights[sampler] == weights["random"]
            continue
        if sampler.endswith("equal tokens"):
            # Batches of about equal tokens: each token weighs about the same under the labelled-count denominator,
            # and dividing by rows (more rows in a batch of short rows) weighs short rows less.
            assert abs(float(labelled) - float(share)) <= 0.03 and float(expected) < float(share) - 0.05
            continue
        # Divided by rows x mean words per row, each word weighs the same: short rows get their share of the words
        # (every batch but the last is full). Divided by the batch's words, length-grouped short batches get more.
        assert abs(float(expected) - float(share)) <= 0.01
        if sampler == "random":
            assert abs(float(labelled) - float(share)) <= 0.02
        else:
            assert float(labelled) > float(share) + 0.1
    # Padding falls from random rows to length groups of 4, of 50, and batches cut by tokens.
    assert [padding[name] for name in samplers] == sorted((padding[name] for name in samplers), reverse=True)
    # Sorted parts of each random batch: less padding the more parts.
    assert padding["random"] > padding[micro[0]] > padding[micro[1]]


def test_quality_report_compares_times_only_on_the_plain_runs_cpu(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import quality

    def row(run, task, seed, seconds, cpu="A"):
        scores = {f"{name}_{split}": 0.8 for name in ("sentiment", "aspects") for split in ("dev", "test")}
        return {
            "setting": "absa",
            "run": run,
            "task": task,
            "seed": seed,
            "train_seconds": seconds,
            "cpu": cpu,
            **scores,
        }

    runs = [
        row("plain", task, seed, seconds) for seed in (0, 1) for task, seconds in (("sentiment", 100), ("aspects", 50))
    ]
    runs += [row("multi", None, 0, 90), row("multi", None, 1, 10, cpu="B")]
    results = {"runs": {str(i): r for i, r in enumerate(runs)}, "epochs": {"absa": 5}}
    table, targets = quality.summary_tables(results)
    # Seed 1's multi-task run trained on another CPU: its time is left out of the row and of the ratio (90 / 150).
    assert "| multi | 80.0 ± 0.0 | 80.0 ± 0.0 | 80.0 ± 0.0 | 80.0 ± 0.0 | 90 ± 0 (1 timed) | 2 |" in table
    assert targets["absa"]["time_ratio_multi_over_plain_pair"] == 0.6


def test_quality_single_task_rows_of_a_token_only_change_train_the_token_tasks(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import quality

    plan = quality.planned_runs(["absa", "sst2_btc"], ["single", "single+length_grouped_token_batches"], [0])
    assert plan == [
        ("absa", "single", "sentiment", 0),
        ("absa", "single", "aspects", 0),
        ("absa", "single+length_grouped_token_batches", "aspects", 0),
        ("sst2_btc", "single", "sentiment", 0),
        ("sst2_btc", "single", "ner", 0),
        ("sst2_btc", "single+length_grouped_token_batches", "ner", 0),
    ]


def absa_score_rows(multi_runs: dict[str, list[float]], plain_seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    """Results of the `absa` setting: plain runs whose aspects test F1 is 0.80 + 0.01 × seed (0.80, 0.81, 0.82 over
    seeds 0-2), and each multi-task run with the given aspects test F1 per seed; every other score 0.8."""

    def row(run, task, seed, aspects):
        scores = {"sentiment_dev": 0.8, "sentiment_test": 0.8, "aspects_dev": 0.8, "aspects_test": aspects}
        return {"setting": "absa", "run": run, "task": task, "seed": seed, "train_seconds": 1.0, "cpu": "A", **scores}

    runs = [row("plain", task, seed, 0.80 + 0.01 * seed) for seed in plain_seeds for task in ("sentiment", "aspects")]
    runs += [row(run, None, seed, score) for run, scores in multi_runs.items() for seed, score in enumerate(scores)]
    return {"runs": {str(i): r for i, r in enumerate(runs)}, "epochs": {"absa": 5}}


def test_quality_targets_give_the_precision_of_three_seeds(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import quality

    _, targets = quality.summary_tables(absa_score_rows({"multi": [0.80, 0.82, 0.84]}))
    aspects = targets["absa"]["aspects"]
    # Means 82 and 81, stds 2 and 1 points over 3 seeds each: standard error sqrt(4/3 + 1/3) = 1.29 points; for
    # F(2, 2) the tail beyond a variance ratio r is 1 / (1 + r), so r = 4 has p = 2 / 5; 2 standard errors between
    # +1.0 and the target -0.5 need 4 (4 + 1) / 1.5² = 8.9, so 9 seeds per run.
    assert aspects["multi_minus_plain_test_points"] == 1.0
    assert aspects["standard_error_points"] == 1.29
    assert aspects["std_ratio"] == 2.0
    assert aspects["std_ratio_p_value"] == 0.4
    assert aspects["seeds_to_resolve_target"] == 9
    # Equal scores on every seed: no spread, so no F-test, and the standard error is 0.
    sentiment = targets["absa"]["sentiment"]
    assert sentiment["std_ratio_p_value"] is None and sentiment["standard_error_points"] == 0.0
    row = "| absa (not in the default set) | aspects | +1.00 ± 1.29 | 2.00 (p = 0.40) | 9 |"
    assert row in quality.targets_table(targets)


def test_quality_candidates_table_compares_every_three_seed_multi_task_row_with_the_plain_trainer(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import quality

    runs = {"multi": [0.80, 0.82, 0.84], "multi+group_4": [0.78] * 3, "multi+mixed": [0.90] * 2}  # mixed: 2 seeds
    table = quality.candidates_table(absa_score_rows(runs))
    # group_4: 78 against the plain runs' 81 ± 1 (3 seeds): -3.00 ± sqrt(1/3) = 0.58; sentiment 80 against 80. Only
    # absa has rows, so only its tasks have columns.
    assert table.splitlines()[0] == "| run | absa sentiment | absa aspects | targets met |"
    assert table.splitlines()[2:] == [
        "| multi | +0.00 ± 0.00 | +1.00 ± 1.29 | 2 of 2 |",
        "| multi+group_4 | +0.00 ± 0.00 | -3.00 ± 0.58 | 1 of 2 |",
    ]


def test_quality_targets_are_means_of_seeds_0_to_2_and_further_seeds_are_reported_beside_them(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import quality

    results = absa_score_rows({"multi": [0.80, 0.82, 0.84, 0.82, 0.82]}, plain_seeds=(0, 1, 2, 3, 4))
    report = quality.markdown(results, "python benchmarks/quality.py")
    # Seeds 0-2 alone: the numbers of test_quality_targets_give_the_precision_of_three_seeds.
    assert results["targets"]["absa"]["aspects"]["standard_error_points"] == 1.29
    assert "### absa (5 epochs, seeds [0, 1, 2])" in report
    assert "| multi | 80.0 ± 0.0 | 80.0 ± 0.0 | 80.0 ± 0.0 | 82.0 ± 2.0 | 1 ± 0 | 3 |" in report
    # Seeds 0-4: multi 80, 82, 84, 82, 82 (variance 2) against plain 80 ... 84 (variance 2.5), both mean 82: standard
    # error sqrt(2/5 + 2.5/5) = 0.95, std ratio sqrt(0.8) = 0.89; with 4 and 4 degrees of freedom the F distribution
    # function is 3x² - 2x³ at x = r / (1 + r) = 4/9, 0.41701 for r = 0.8, so p = 2 × 0.41701 = 0.834.
    aspects = results["targets_all_seeds"]["absa"]["aspects"]
    assert aspects["multi_minus_plain_test_points"] == 0.0 and aspects["standard_error_points"] == 0.95
    assert aspects["std_ratio"] == 0.89 and aspects["std_ratio_p_value"] == 0.834 and aspects["seeds"] == 5
    assert "The same targets with seeds [3, 4] too" in report
