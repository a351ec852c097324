"""ONNX export and serving: `python -m hf_mtl.export`, `OnnxMultiTaskModel` and the shared `multitask` pipeline."""

import json
import sys
from pathlib import Path

import onnx
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoTokenizer, pipeline

import hf_mtl
from hf_mtl import MultiTaskModel, MultiTaskPipeline
from hf_mtl.export import main
from hf_mtl.onnx_export import export_onnx
from hf_mtl.onnx_model import OnnxMultiTaskModel
from run_mtl import main as run_mtl

from .conftest import run_quick_benchmark

TEXTS = [
    "José visited São Paulo, then Paris and Paris again.",
    "The café was awful!",
    "Anna",
    "ok " * 5,
    " ".join(["Elena Vasquez flew to Lisbon ."] * 20),  # about 3 windows of 64 sub-tokens
]
# The demo-trained model windows texts at this length (it is saved in its config as `max_seq_length`).
DEMO_MAX_LENGTH = 24


@pytest.fixture(scope="module")
def demo_model(tiny_dir, tmp_path_factory) -> Path:
    """The tiny encoder trained by `run_mtl.py configs/demo.yaml` for 8 steps: a trained model with a card."""
    folder = tmp_path_factory.mktemp("demo")
    run_mtl(
        [
            "configs/demo.yaml",
            "--model_name_or_path",
            str(tiny_dir),
            "--output_dir",
            str(folder),
            "--max_steps",
            "8",
            "--learning_rate",
            "1e-3",
            "--max_seq_length",
            str(DEMO_MAX_LENGTH),
            "--eval_strategy",
            "no",
            "--do_eval",
            "false",
            "--do_predict",
            "false",
            "--disable_tqdm",
            "true",
        ]
    )
    return folder


@pytest.fixture(scope="module")
def exported(saved_model, demo_model, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each model's PyTorch folder and its fp32 export."""
    folders = {}
    for name, source in (("random", saved_model), ("demo", demo_model)):
        folders[name] = (source, export_onnx(source, tmp_path_factory.mktemp(f"{name}-onnx")))
    return folders


def test_export_writes_one_graph_with_every_task_and_dynamic_axes(exported, tokenizer):
    _, folder = exported["random"]
    assert {"model.onnx", "config.json", "tokenizer.json", "README.md"} <= {path.name for path in folder.iterdir()}
    graph = onnx.load(str(folder / "model.onnx")).graph
    assert [node.name for node in graph.input] == list(tokenizer.model_input_names)
    assert [node.name for node in graph.output] == ["logits_sentiment", "logits_ner"]
    dims = {
        node.name: [dim.dim_param or dim.dim_value for dim in node.type.tensor_type.shape.dim]
        for node in [*graph.input, *graph.output]
    }
    assert dims["input_ids"] == ["batch", "sequence"]
    assert dims["logits_sentiment"] == ["batch", 2]
    assert dims["logits_ner"] == ["batch", "sequence", 9]
    info = json.loads((folder / "config.json").read_text())["onnx_export"]
    assert (info["opset"], info["quantization"], info["exporter"]) == (
        17,
        None,
        "torch.onnx.export (TorchScript, dynamo=False)",
    )
    assert info["max_abs_logit_difference"] < 1e-4
    card = (folder / "README.md").read_text()
    assert "## ONNX export" in card and "opset 17" in card and f"onnxruntime | {info['onnxruntime_version']}" in card
    assert ModelCard(card).data.tags == ["onnx"]


@pytest.mark.parametrize("name", ["random", "demo"])
def test_onnx_logits_equal_pytorch_logits(exported, name):
    source, folder = exported[name]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # Another batch size and length than the traced example, with padding, so that no shape is baked in.
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=40, return_tensors="pt")
    with torch.inference_mode():
        expected = MultiTaskModel.from_pretrained(source).eval()(**batch).logits
    got = OnnxMultiTaskModel.from_pretrained(folder)(**batch).logits
    assert list(got) == ["sentiment", "ner"]
    for task in expected:
        assert got[task].shape == expected[task].shape
        torch.testing.assert_close(got[task], expected[task], atol=1e-4, rtol=0)


def _labels(result: dict) -> tuple:
    return (
        result["sentiment"]["label"],
        [(e["entity_group"], e["start"], e["end"], e["word"]) for e in result["entities"]],
    )


def _structure(value):
    if isinstance(value, dict):
        return {key: _structure(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_structure(item) for item in value]
    return type(value).__name__


@pytest.mark.parametrize("name", ["random", "demo"])
def test_pipeline_output_is_the_same_on_both_backends(exported, name):
    source, folder = exported[name]
    torch_pipe = pipeline("multitask", model=str(source))
    onnx_pipe = pipeline("multitask", model=str(folder))
    explicit = pipeline(
        "multitask", model=OnnxMultiTaskModel.from_pretrained(folder), tokenizer=AutoTokenizer.from_pretrained(folder)
    )
    assert isinstance(onnx_pipe, MultiTaskPipeline) and isinstance(onnx_pipe.model, OnnxMultiTaskModel)
    expected = torch_pipe(TEXTS)
    for strategy in ("first", "simple"):
        for got in (onnx_pipe(TEXTS, aggregation_strategy=strategy), explicit(TEXTS, aggregation_strategy=strategy)):
            reference = expected if strategy == "first" else torch_pipe(TEXTS, aggregation_strategy=strategy)
            assert _structure(got) == _structure(reference)
            assert [_labels(result) for result in got] == [_labels(result) for result in reference]
            assert [r["sentiment"]["score"] for r in got] == pytest.approx(
                [r["sentiment"]["score"] for r in reference], abs=1e-4
            )


def test_demo_export_keeps_the_card_and_the_trained_length(exported):
    source, folder = exported["demo"]
    card = ModelCard((folder / "README.md").read_text())
    original = ModelCard((source / "README.md").read_text())
    assert card.text.startswith(original.text.rstrip())
    assert card.data.tags == [*(original.data.tags or []), "onnx"]
    metadata = original.data.to_dict()
    assert {**metadata, "tags": card.data.tags} == card.data.to_dict()
    assert OnnxMultiTaskModel.from_pretrained(folder).config.max_seq_length == DEMO_MAX_LENGTH


def test_int8_export_from_the_command_line(demo_model, exported, tmp_path, capsys):
    folder = tmp_path / "int8"
    assert main([str(demo_model), str(folder), "--quantize", "int8", "--opset", "14"]) == 0
    assert capsys.readouterr().out.strip() == f"ONNX model written to {folder / 'model.onnx'}"
    info = json.loads((folder / "config.json").read_text())["onnx_export"]
    assert (info["quantization"], info["weight_type"], info["opset"]) == ("int8", "QInt8, per channel", 14)
    graph = onnx.load(str(folder / "model.onnx")).graph
    assert any(node.op_type == "DynamicQuantizeLinear" for node in graph.node)
    assert (folder / "model.onnx").stat().st_size < (exported["demo"][1] / "model.onnx").stat().st_size
    results = pipeline("multitask", model=str(folder))(TEXTS)
    assert [set(result) for result in results] == [{"sentiment", "entities"}] * len(TEXTS)
    assert "dynamic int8 weights" in (folder / "README.md").read_text()


def test_missing_onnxruntime_is_one_line_naming_the_extra(exported, saved_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    message = r"^ONNX export and serving need the onnxruntime package: pip install hf_mtl\[onnx\]$"
    with pytest.raises(hf_mtl.HfMtlError, match=message):
        OnnxMultiTaskModel.from_pretrained(exported["random"][1])
    with pytest.raises(hf_mtl.HfMtlError, match=message):
        export_onnx(saved_model, tmp_path / "out")
    assert main([str(saved_model), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "python -m hf_mtl.export: error: ONNX export and serving need the onnxruntime package: "
        "pip install hf_mtl[onnx]\n"
    )
    # Everything else still works: the PyTorch pipeline does not need onnxruntime.
    assert set(pipeline("multitask", model=str(saved_model))("Anna")) == {"sentiment", "entities"}


def test_a_folder_without_a_graph_is_not_an_onnx_model(saved_model, tmp_path, capsys):
    with pytest.raises(OSError, match="no model.onnx; export one with `python -m hf_mtl.export`"):
        OnnxMultiTaskModel.from_pretrained(saved_model)
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"python -m hf_mtl.export: error: {tmp_path / 'missing'}: no such folder; export a trained hf_mtl model "
        "(run_mtl.py's output_dir)\n"
    )


@pytest.mark.integration
def test_serving_benchmark_quick(tmp_path):
    output = tmp_path / "serving.json"
    result = run_quick_benchmark("serving.py", output)
    results = json.loads(output.read_text())
    assert list(results["backends"]) == ["naive_forward", "pytorch_pipeline", "onnx_fp32", "onnx_int8"]
    for backend in results["backends"].values():
        assert backend["sentences_per_second"]["median"] > 0
    assert results["backends"]["onnx_fp32"]["max_abs_logit_difference"] < 1e-4
    assert results["long_texts"]["unseen_gold_entities"] == 0
    assert "int8 / PyTorch pipeline" in result.stdout
