"""CPU speed features: length-grouped batches, bf16 only where native, threads per process, the fast pipeline."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, pipeline

import hf_mtl.arguments
from hf_mtl import MultiTaskModel, MultiTaskTrainer, parse_tasks, tokenize_and_align
from hf_mtl.arguments import MultiTaskTrainingArguments
from hf_mtl.cpu import threads_per_process
from hf_mtl.data.collator import MultiTaskDataCollator
from hf_mtl.data.sampling import ShuffledLengthGroupedSampler
from hf_mtl.data.sources import DEMO_DATASET, load_source, parse_sources
from hf_mtl.errors import HfMtlError
from run_mtl import parse_args

from .conftest import run_quick_benchmark

ROOT = Path(__file__).resolve().parents[1]
TASKS = parse_tasks(None)


@pytest.fixture(scope="module")
def demo_train(tokenizer):
    loaded = load_source(parse_sources([{"name": "demo", "dataset_name": DEMO_DATASET}], TASKS)[0], TASKS)
    return tokenize_and_align(loaded.splits["train"], tokenizer, TASKS)


def test_rows_carry_their_length_and_the_collator_drops_it(demo_train, tokenizer):
    assert demo_train["length"] == [len(ids) for ids in demo_train["input_ids"]]
    batch = MultiTaskDataCollator(tokenizer, ["ner_labels"])([demo_train[i] for i in range(4)])
    assert "length" not in batch
    assert batch["input_ids"].shape[1] == max(demo_train["length"][:4])


def test_defaults_group_by_length_and_choose_bf16_only_where_native(tmp_path, monkeypatch):
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path))
    assert args.train_sampling_strategy == "group_by_length"
    monkeypatch.setattr(hf_mtl.arguments, "has_native_bf16", lambda: True)
    assert MultiTaskTrainingArguments(output_dir=str(tmp_path)).bf16 is True
    assert MultiTaskTrainingArguments(output_dir=str(tmp_path), bf16=False).bf16 is False
    monkeypatch.setattr(hf_mtl.arguments, "has_native_bf16", lambda: False)
    assert MultiTaskTrainingArguments(output_dir=str(tmp_path)).bf16 is False
    assert MultiTaskTrainingArguments(output_dir=str(tmp_path), bf16=True).bf16 is True


def test_bare_bf16_flag_means_true(tmp_path):
    for extra, expected in (([], None), (["--bf16"], True), (["--bf16", "false"], False), (["--bf16", "true"], True)):
        *_, args = parse_args(["--output_dir", str(tmp_path), *extra])
        assert args.bf16 is (expected if expected is not None else hf_mtl.arguments.has_native_bf16())


def test_threads_per_process(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads_per_process(None) is None  # one process: PyTorch's own default
    assert threads_per_process(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr("hf_mtl.cpu.available_cores", lambda: 8)
    assert threads_per_process(None) == 4
    monkeypatch.setattr("hf_mtl.cpu.available_cores", lambda: 1)
    assert threads_per_process(None) == 1
    with pytest.raises(HfMtlError, match="--torch_num_threads must be at least 1, got 0"):
        MultiTaskTrainingArguments(output_dir="unused", torch_num_threads=0)


def _padding_fraction(trainer) -> float:
    real = padded = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
    return 1 - real / padded


def test_trainer_groups_by_length_and_sets_threads(tiny_model, tokenizer, demo_train, tmp_path):
    before = torch.get_num_threads()
    try:
        grouped = MultiTaskTrainer(
            model=tiny_model,
            args=MultiTaskTrainingArguments(
                output_dir=str(tmp_path), per_device_train_batch_size=8, torch_num_threads=1, batch_composition="mixed"
            ),
            train_dataset=demo_train,
            processing_class=tokenizer,
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    # As training gets it: after the unused columns are dropped, inside the accelerate-prepared loader.
    sampler = grouped.get_train_dataloader().batch_sampler.sampler
    assert isinstance(sampler, ShuffledLengthGroupedSampler)
    assert sampler.lengths == demo_train["length"]
    assert sorted(sampler) == list(range(len(demo_train)))  # every row once per epoch
    shuffled = MultiTaskTrainer(
        model=tiny_model,
        args=MultiTaskTrainingArguments(
            output_dir=str(tmp_path), per_device_train_batch_size=8, train_sampling_strategy="random"
        ),
        train_dataset=demo_train,
        processing_class=tokenizer,
    )
    torch.manual_seed(0)
    grouped_padding = _padding_fraction(grouped)
    torch.manual_seed(0)
    random_padding = _padding_fraction(shuffled)
    assert grouped_padding < random_padding / 2, (grouped_padding, random_padding)


def test_pipeline_batches_a_list_by_length_and_answers_in_input_order(tiny_dir, tmp_path):
    torch.manual_seed(1)
    MultiTaskModel.from_encoder(str(tiny_dir)).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(tmp_path)
    pipe = pipeline("multitask", model=str(tmp_path))
    assert pipe._batch_size == 32
    texts = ["a b", "Anna flew from Paris to Rome on Monday .", "ok", "the food was awful and so was the service"]
    calls = []
    original_forward = pipe.model.forward

    def recording_forward(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return original_forward(*args, **kwargs)

    pipe.model.forward = recording_forward
    answers = pipe(texts)
    assert len(calls) == 1  # one batch of four
    pipe.model.forward = original_forward
    for text, answer in zip(texts, answers):
        single = pipe(text)
        assert answer["sentiment"]["label"] == single["sentiment"]["label"]
        assert answer["sentiment"]["score"] == pytest.approx(single["sentiment"]["score"], abs=1e-5)
        assert [(e["start"], e["end"]) for e in answer["entities"]] == [
            (e["start"], e["end"]) for e in single["entities"]
        ]


@pytest.mark.integration
def test_throughput_benchmark_quick(tmp_path):
    output = tmp_path / "throughput.json"
    result = run_quick_benchmark("throughput.py", output)
    results = json.loads(output.read_text())
    assert {"naive", "defaults", "plain"} <= set(results["modes"])
    assert results["same_batches"] is True
    naive, defaults = results["modes"]["naive"], results["modes"]["defaults"]
    assert naive["padding_fraction"] > 0.5 > defaults["padding_fraction"]
    assert {"b/a", "b/d", "inference"} <= set(results["ratios"])
    assert "b/a, defaults / naive" in result.stdout


@pytest.mark.integration
def test_training_overhead_benchmark_quick(tmp_path):
    output = tmp_path / "training_overhead.json"
    result = run_quick_benchmark("training_overhead.py", output)
    results = json.loads(output.read_text())
    assert [run["mode"] for run in results["runs"]] == ["defaults", "plain"]
    assert results["same_batches"] is True
    assert set(results["profiles"]) == {"defaults", "plain"}
    assert all(entry.startswith("aten::") for entry in results["profiles"]["defaults"][:3])
    defaults, plain = (run["window_seconds"] for run in results["runs"])
    assert results["ratio_b_over_d_paired_by_window"] == pytest.approx(sum(plain) / sum(defaults))
    assert "b/d, paired by window" in result.stdout
    steps = results["interleaved"]["step_seconds"]
    assert len(steps["defaults"]) == len(steps["plain"]) == 4
    assert results["interleaved"]["ratio_b_over_d"] == pytest.approx(sum(steps["plain"]) / sum(steps["defaults"]))


def test_prediction_keeps_the_data_order_under_length_grouping(tiny_model, tokenizer, demo_train, tmp_path):
    from hf_mtl import preprocess_logits_for_metrics

    rows = demo_train.select(range(40))
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=8, report_to="none")
    assert args.train_sampling_strategy == "group_by_length"
    trainer = MultiTaskTrainer(
        model=tiny_model,
        args=args,
        processing_class=tokenizer,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
    )
    output = trainer.predict(rows)
    sentiment_labels = output.label_ids[0] if isinstance(output.label_ids, tuple) else output.label_ids
    assert list(sentiment_labels) == rows["sentiment_labels"]
    tiny_model.eval()
    with torch.no_grad():
        for index in (0, 17, 39):
            batch = MultiTaskDataCollator(tokenizer, ["ner_labels"])([rows[index]])
            batch.pop("ner_labels"), batch.pop("sentiment_labels")
            expected = tiny_model(**batch).logits["ner"].argmax(dim=-1)[0]
            assert output.predictions["ner"][index][: len(expected)].tolist() == expected.tolist()


def test_shuffled_length_grouped_sampler_keeps_batches_tight_in_a_random_order():
    from hf_mtl.data.sampling import ShuffledLengthGroupedSampler

    lengths = torch.randint(3, 120, (2000,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = ShuffledLengthGroupedSampler(lengths, batch_size=10, generator=torch.Generator().manual_seed(1))
    assert sampler.megabatch_batches == 50
    order = list(sampler)
    assert sorted(order) == list(range(2000))
    batches = [order[i : i + 10] for i in range(0, 2000, 10)]
    padding = sum(10 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches) / sum(lengths)
    assert padding < 0.05
    first_megabatch = [max(lengths[i] for i in b) for b in batches[:50]]
    assert first_megabatch != sorted(first_megabatch, reverse=True)  # not swept from long to short
    assert list(sampler) != order  # a new epoch, a new order


@pytest.mark.integration
def test_evaluation_benchmark_quick(tmp_path):
    output = tmp_path / "evaluation.json"
    result = run_quick_benchmark("evaluation.py", output)
    results = json.loads(output.read_text())
    assert list(results["sets"]) == ["sst2 dev", "wnut17 dev", "wnut17 test"]
    for row in results["sets"].values():
        assert row["rows"] == 64
        assert row["same_scores"] is True  # the script also exits non-zero otherwise
        # 64 rows of varied lengths in batches of 16: sorted batches pad less than batches in the data's order.
        assert 0 <= row["padding_longest_first"] < row["padding_in_order"]
        assert row["speedup"] == pytest.approx(row["seconds_in_order"] / row["seconds_longest_first"])
    assert "| wnut17 test | 64 |" in result.stdout
