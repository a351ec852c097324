"""`export_onnx`: a trained model as one ONNX graph, for ONNX Runtime (`python -m hf_mtl.export` is its command line).

The graph takes the tokenizer's `model_input_names` and returns every task's logits (`logits_sentiment`,
`logits_ner`, ...), with dynamic batch and sequence axes. It is traced by `torch.onnx.export` with the TorchScript
exporter (`dynamo=False`): in torch 2.13 the default dynamo exporter needs the `onnxscript` package besides `onnx`,
while the TorchScript one needs nothing more and gives logits equal to PyTorch's to about 1e-7 on these encoders.
`quantize="int8"` then stores the weights of the matrix multiplies and embeddings as int8 with
`onnxruntime.quantization.quantize_dynamic` (activations are quantized on the fly, per batch).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import jinja2
import torch
from huggingface_hub import ModelCard
from torch import nn

from .errors import HfMtlError
from .modeling_mtl import MultiTaskModel
from .onnx_model import ONNX_FILE, OnnxMultiTaskModel, output_name, require_onnx
from .tokenization import load_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # the first opset with LayerNormalization, which ONNX Runtime runs as one fused kernel
QUANTIZATIONS = ("int8",)
CARD_SECTION = Path(__file__).parent / "templates" / "onnx_export_section.md"
# A padded batch: a trace of an unpadded one could drop the attention mask as a no-op. The check batch differs in
# size and lengths from the traced one, so that a shape baked into the graph would show.
TRACE_TEXTS = ["Ada Lovelace moved to London in 1835 and loved it .", "Hello there"]
CHECK_TEXTS = ["Grace Hopper", "The café in Lisbon was awful , said Maria Lopez from Porto on Tuesday .", "ok ok ok"]


class _TaskLogits(nn.Module):
    """The model as a graph: positional inputs in the tokenizer's order, one logits tensor per task, in task order."""

    def __init__(self, model: MultiTaskModel, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.tasks = [task.name for task in model.config.task_specs]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(**dict(zip(self.input_names, inputs))).logits
        return tuple(logits[task] for task in self.tasks)


def export_onnx(
    model_dir: str | Path, output_dir: str | Path, quantize: str | None = None, opset: int | None = None
) -> Path:
    """Exports a saved hf_mtl model to `output_dir` for ONNX Runtime.

    Writes `model.onnx` (one graph, every task's logits), the tokenizer, `config.json` (the model's
    [`MultiTaskConfig`] with an `onnx_export` entry saying how it was exported) and `README.md` (the model's card, if
    it has one, with an "ONNX export" section). Load the result with `pipeline("multitask", model=output_dir)` or
    [`OnnxMultiTaskModel.from_pretrained`].

    Args:
        model_dir (`str` or `Path`): A trained hf_mtl model (`run_mtl.py`'s `output_dir`).
        output_dir (`str` or `Path`): Where to write; created if needed, files of the same names are replaced.
        quantize (`str`, *optional*): `"int8"` for dynamic int8 quantization of the weights; `None` keeps fp32.
        opset (`int`, *optional*, defaults to 17): ONNX opset of the graph.

    Returns:
        The output folder.

    Raises [`HfMtlError`] when `model_dir` is not a folder, `onnx` or `onnxruntime` is not installed (`pip install
    hf_mtl[onnx]`) or `quantize` is not one of `int8`, `None`.
    """
    if not Path(model_dir).is_dir():
        raise HfMtlError(f"{model_dir}: no such folder; export a trained hf_mtl model (run_mtl.py's output_dir)")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise HfMtlError(f"--quantize must be one of {list(QUANTIZATIONS)}, got {quantize!r}")
    onnx = require_onnx("onnx")
    onnxruntime = require_onnx("onnxruntime")
    opset = opset or DEFAULT_OPSET
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(str(model_dir))
    model = MultiTaskModel.from_pretrained(model_dir).eval()
    input_names = list(tokenizer.model_input_names)
    tasks = model.config.task_specs
    with tempfile.TemporaryDirectory() as scratch:
        traced = Path(scratch) / ONNX_FILE
        _trace(model, tokenizer, input_names, traced, opset)
        weight_type = None
        if quantize == "int8":
            weight_type = _quantize_int8(traced, output_dir / ONNX_FILE)
        else:
            shutil.copyfile(traced, output_dir / ONNX_FILE)
    tokenizer.save_pretrained(output_dir)
    info: dict[str, Any] = {
        "file": ONNX_FILE,
        "opset": opset,
        "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "quantization": quantize,
        "weight_type": weight_type,
        "inputs": input_names,
        "outputs": [output_name(task.name) for task in tasks],
    }
    model.config.onnx_export = info
    model.config.save_pretrained(output_dir)
    # Checked on the written folder as users load it; recorded in config.json and the card.
    info["max_abs_logit_difference"] = _largest_difference(model, tokenizer, output_dir)
    info["check_texts"] = len(CHECK_TEXTS)
    model.config.onnx_export = info
    model.config.save_pretrained(output_dir)
    _write_card(Path(model_dir), output_dir, info)
    logger.info(
        "Exported %s to %s (opset %d, %s); largest logit difference from PyTorch %.2e",
        model_dir,
        output_dir / ONNX_FILE,
        opset,
        quantize or "fp32",
        info["max_abs_logit_difference"],
    )
    return output_dir


def _trace(model: MultiTaskModel, tokenizer, input_names: list[str], path: Path, opset: int) -> None:
    example = tokenizer(TRACE_TEXTS, padding=True, return_tensors="pt")
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    for task in model.config.task_specs:
        dynamic_axes[output_name(task.name)] = {0: "batch", 1: "sequence"} if task.is_token_task else {0: "batch"}
    graph = _TaskLogits(model, input_names).eval()
    with warnings.catch_warnings():
        # Python-level checks of shapes in transformers' masking code (constant for an encoder), the notice that the
        # TorchScript exporter is not the default any more, and the note on negative gather indices (ours are not).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*aten::index.*")
        torch.onnx.export(
            graph,
            tuple(example[name] for name in input_names),
            str(path),
            input_names=input_names,
            output_names=[output_name(task.name) for task in model.config.task_specs],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _quantize_int8(source: Path, target: Path) -> str:
    """Dynamic int8 quantization of `source`'s weights into `target`; returns the weight type used.

    One scale per output channel of each weight matrix: on MiniLM trained on SST-2 + WNUT-17 (400 steps), one scale
    per tensor lost 2.7 points of WNUT-17 dev entity F1 against fp32 and per channel 0.1, at the same speed
    (docs/BENCHMARKS.md, "Serving on a CPU")."""
    quantization = require_onnx("onnxruntime.quantization")
    quantization.quantize_dynamic(str(source), str(target), weight_type=quantization.QuantType.QInt8, per_channel=True)
    return "QInt8, per channel"


def _largest_difference(model: MultiTaskModel, tokenizer, output_dir: Path) -> float:
    """The largest absolute difference between PyTorch's and the exported graph's logits, on `CHECK_TEXTS`."""
    batch = tokenizer(CHECK_TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**batch).logits
    got = OnnxMultiTaskModel.from_pretrained(output_dir)(**batch).logits
    return max(float((got[task] - expected[task]).abs().max()) for task in expected)


def _write_card(model_dir: Path, output_dir: Path, info: dict[str, Any]) -> None:
    """The source model's card (if any) with an "ONNX export" section appended; a card with only that section
    otherwise."""
    from . import __version__  # here, not at the top: `hf_mtl/__init__.py` imports this module before setting it

    section = jinja2.Template(CARD_SECTION.read_text()).render(**info, hf_mtl_version=__version__)
    source = model_dir / "README.md"
    if source.is_file():
        card = ModelCard(source.read_text())
        card.data.tags = [*(card.data.tags or []), *([] if "onnx" in (card.data.tags or []) else ["onnx"])]
    else:
        card = ModelCard(f"---\ntags:\n- onnx\n---\n\n# {model_dir.name} (ONNX)\n")
    card.text = card.text.rstrip() + "\n\n" + section
    card.save(output_dir / "README.md")


__all__ = ["export_onnx"]
