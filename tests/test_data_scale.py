"""Data at scale: files read into cached Arrow, errors still by file and line, streaming, the tokenisation cache."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, IterableDataset

from hf_mtl import HfMtlError, parse_tasks, tokenize_and_align
from hf_mtl.data.readers import count_records
from hf_mtl.data.sources import count_rows, load_source, parse_sources
from tests.conftest import run_quick_benchmark

TASKS = parse_tasks(None)
ROOT = Path(__file__).resolve().parents[1]
SENTIMENT = {"text_column": "sentence", "label_columns": {"sentiment": "label"}}


def _source(**entry):
    return parse_sources([{"name": "src", **entry}], TASKS)[0]


def _write_tsv(path: Path, rows: int, bad_row: int | None = None) -> None:
    lines = [f"film number {i}\t{'positive' if i % 3 else 'negative'}" for i in range(rows)]
    if bad_row is not None:
        lines[bad_row] = "so so\tneutral"
    path.write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")


def _write_conll(path: Path, sentences: int, bad_sentence: int | None = None) -> None:
    blocks = [f"Anna\tB-PER\nvisited\tO\nRome\tB-LOC\n{i}\tO\n" for i in range(sentences)]
    if bad_sentence is not None:
        blocks[bad_sentence] = "Anna\tB-PER\nvisited\tO\nRome\tB-CITY\n"
    path.write_text("-DOCSTART-\tO\n\n" + "\n".join(blocks))


def test_a_bad_line_deep_in_a_large_tsv_is_named_by_file_and_line(tmp_path):
    _write_tsv(tmp_path / "big.tsv", 60_000, bad_row=54_321)
    source = _source(train_file=str(tmp_path / "big.tsv"), **SENTIMENT)
    expected = r"big.tsv:54323: label 'neutral' is not one of task 'sentiment''s labels"
    with pytest.raises(HfMtlError, match=expected):
        load_source(source, TASKS, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(HfMtlError, match=expected):  # the check runs in worker processes: the same message
        load_source(source, TASKS, num_proc=2, cache_dir=str(tmp_path / "cache"))


def test_a_bad_line_deep_in_a_large_conll_file_is_named_by_file_and_line(tmp_path):
    _write_conll(tmp_path / "big.conll", 20_000, bad_sentence=17_000)
    source = _source(train_file=str(tmp_path / "big.conll"), format="conll", label_columns={"ner": "tags"})
    # A CoNLL record is named by its sentence's first line: 2 header lines, then 5 lines per sentence before it.
    with pytest.raises(HfMtlError, match=r"big.conll:85003: label 'B-CITY' is not one of task 'ner'"):
        load_source(source, TASKS, cache_dir=str(tmp_path / "cache"))


def test_a_parse_error_the_builder_meets_is_named_by_file_and_line(tmp_path):
    lines = [json.dumps({"tokens": ["a", "b"], "tags": ["O", "O"]})] * 5000
    lines[4321] = '{"tokens": ["a", "b"], "tags": ["O", "O"'
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    source = _source(train_file=str(tmp_path / "big.jsonl"), tokens_column="tokens", label_columns={"ner": "tags"})
    with pytest.raises(HfMtlError, match=r"big.jsonl:4322: not valid JSON"):
        load_source(source, TASKS, cache_dir=str(tmp_path / "cache"))


def test_files_are_read_into_cached_arrow_and_reread_when_they_change(tmp_path):
    path, cache = tmp_path / "ner.conll", tmp_path / "cache"
    _write_conll(path, 30)
    source = _source(train_file=str(path), format="conll", label_columns={"ner": "tags"})
    first = load_source(source, TASKS, cache_dir=str(cache)).splits["train"]
    assert len(first) == 30 and first[29]["tokens"] == ["Anna", "visited", "Rome", "29"]
    assert first[0]["ner_labels"] == [1, 0, 3, 0]
    assert first.cache_files and all(Path(f["filename"]).is_relative_to(cache) for f in first.cache_files)
    again = load_source(source, TASKS, cache_dir=str(cache)).splits["train"]
    assert again.cache_files == first.cache_files
    _write_conll(path, 31)
    changed = load_source(source, TASKS, cache_dir=str(cache)).splits["train"]
    assert len(changed) == 31 and changed.cache_files != first.cache_files


def test_byte_order_mark_is_dropped_by_every_builder(tmp_path):
    (tmp_path / "a.tsv").write_bytes(b"\xef\xbb\xbfsentence\tlabel\ngood\tpositive\n")
    (tmp_path / "a.jsonl").write_bytes(b'\xef\xbb\xbf{"sentence": "good", "label": "positive"}\n')
    for name in ("a.tsv", "a.jsonl"):
        rows = load_source(_source(train_file=str(tmp_path / name), **SENTIMENT), TASKS, cache_dir=str(tmp_path))
        assert rows.splits["train"][0] == {"text": "good", "sentiment_labels": 1}


def test_cells_stay_text_and_blank_rows_are_skipped(tmp_path):
    (tmp_path / "a.tsv").write_text("sentence\tlabel\nNA\t1\n  \t \n\n007\t0\n")
    source = _source(
        train_file=str(tmp_path / "a.tsv"), **SENTIMENT, label_maps={"sentiment": {"0": "negative", "1": "positive"}}
    )
    rows = load_source(source, TASKS, cache_dir=str(tmp_path / "cache")).splits["train"]
    assert rows.to_list() == [{"text": "NA", "sentiment_labels": 1}, {"text": "007", "sentiment_labels": 0}]


def test_count_records_without_parsing(tmp_path):
    _write_conll(tmp_path / "a.conll", 7)
    _write_tsv(tmp_path / "a.tsv", 11)
    (tmp_path / "a.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n')
    (tmp_path / "a.json").write_text('[{"a": 1}, {"a": 2}, {"a": 3}]')
    counts = {name: count_records(str(tmp_path / f"a.{name}"), name, "utf-8") for name in ("conll", "tsv", "jsonl")}
    assert counts == {"conll": 7, "tsv": 11, "jsonl": 2}
    assert count_records(str(tmp_path / "a.json"), "json", "utf-8") == 3


def test_streaming_gives_the_same_rows_lazily_and_evaluation_stays_map_style(tmp_path, tokenizer):
    _write_tsv(tmp_path / "train.tsv", 2500)
    _write_tsv(tmp_path / "dev.tsv", 40)
    source = _source(train_file=str(tmp_path / "train.tsv"), validation_file=str(tmp_path / "dev.tsv"), **SENTIMENT)
    streamed = load_source(source, TASKS, streaming=True, cache_dir=str(tmp_path / "cache"))
    assert isinstance(streamed.splits["train"], IterableDataset) and isinstance(streamed.splits["validation"], Dataset)
    assert streamed.num_rows == {"train": 2500, "validation": 40} and count_rows(source, "train") == 2500
    mapped = load_source(source, TASKS, cache_dir=str(tmp_path / "cache")).splits["train"]
    lazy = tokenize_and_align(streamed.splits["train"], tokenizer, TASKS, max_seq_length=16)
    eager = tokenize_and_align(mapped, tokenizer, TASKS, max_seq_length=16)
    assert isinstance(lazy, IterableDataset) and lazy.features == eager.features
    assert list(lazy.take(1200)) == eager.select(range(1200)).to_list()


def test_streaming_reports_a_bad_record_by_file_and_line_when_reached(tmp_path):
    _write_tsv(tmp_path / "train.tsv", 3000, bad_row=2500)
    streamed = load_source(_source(train_file=str(tmp_path / "train.tsv"), **SENTIMENT), TASKS, streaming=True)
    rows = iter(streamed.splits["train"])
    assert [next(rows)["text"] for _ in range(3)] == ["film number 0", "film number 1", "film number 2"]
    with pytest.raises(HfMtlError, match=r"train.tsv:2502: label 'neutral'"):
        list(rows)


def test_hub_style_source_takes_split_slices(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    records = [{"sentence": f"film {i}", "label": "positive" if i % 2 else "negative"} for i in range(10)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    source = _source(dataset_name=str(folder), splits={"train": "train[:6]", "validation": "train[60%:]"}, **SENTIMENT)
    loaded = load_source(source, TASKS, cache_dir=str(tmp_path / "cache"))
    assert loaded.splits["train"]["text"] == [f"film {i}" for i in range(6)]
    assert loaded.splits["validation"]["sentiment_labels"] == [0, 1, 0, 1]
    assert loaded.num_rows == {"train": 6, "validation": 4}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"train_file": "a.tsv", "revision": "v1"}, "revision and splits apply to a Hub data set"),
        ({"dataset_name": "org/corpus", "splits": {"dev": "validation"}}, "splits must map some of"),
    ],
)
def test_hub_options_are_checked(entry, message):
    with pytest.raises(HfMtlError, match=message):
        _source(**entry, **SENTIMENT)


_RUN = """
import json, sys
from transformers import AutoTokenizer
from hf_mtl import parse_tasks, tokenize_and_align
from hf_mtl.data.sources import load_source, parse_sources

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
calls = []
call = type(tokenizer).__call__
type(tokenizer).__call__ = lambda self, *args, **kwargs: calls.append(1) or call(self, *args, **kwargs)
tasks = parse_tasks(None)
sources = parse_sources(json.loads(sys.argv[2]), tasks)
tokenised = [
    tokenize_and_align(load_source(s, tasks, cache_dir=sys.argv[3]).splits["train"], tokenizer, tasks, 32)
    for s in sources
]
print(json.dumps({
    "calls": len(calls),
    "rows": [len(t) for t in tokenised],
    "fingerprints": [t._fingerprint for t in tokenised],
    "cache_files": [f["filename"] for t in tokenised for f in t.cache_files],
}))
"""


def test_a_cached_rerun_in_a_new_process_does_not_call_the_tokenizer(tmp_path, tiny_dir):
    _write_tsv(tmp_path / "s.tsv", 2500)
    _write_conll(tmp_path / "n.conll", 600)
    entries = [
        {"name": "sst", "train_file": str(tmp_path / "s.tsv"), **SENTIMENT},
        {"name": "ner", "train_file": str(tmp_path / "n.conll"), "format": "conll", "label_columns": {"ner": "tags"}},
    ]
    command = [sys.executable, "-c", _RUN, str(tiny_dir), json.dumps(entries), str(tmp_path / "cache")]
    runs = []
    for _ in range(2):
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["calls"] == 3 + 1  # batches of 1000 rows: 3 of the TSV, 1 of the CoNLL file
    assert second["calls"] == 0
    assert second["rows"] == first["rows"] == [2500, 600]
    assert second["fingerprints"] == first["fingerprints"]
    assert second["cache_files"] == first["cache_files"]
    assert all(Path(name).is_relative_to(tmp_path / "cache") for name in second["cache_files"])


def test_data_scale_benchmark_quick(tmp_path):
    output = tmp_path / "data_scale.json"
    run_quick_benchmark("data_scale.py", output)
    results = json.loads(output.read_text())
    assert results["first"]["rows"] == {"sentiment": 20_000, "ner": 4_000}
    assert results["streaming"]["counted_rows"] == {"sentiment": 20_000, "ner": 4_000}
    assert results["cached"]["seconds"] < results["first"]["seconds"]
    assert set(results["targets"]) == {"peak_rss_above_model_mib", "cached_speedup", "first_step_s", "rss_growth_mib"}
