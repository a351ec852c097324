"""`OnnxMultiTaskModel`: an exported multi-task graph on ONNX Runtime, with the outputs of [`MultiTaskModel`]."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .configuration_mtl import MultiTaskConfig
from .errors import HfMtlError
from .modeling_mtl import MultiTaskModelOutput

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_EXTRA = "pip install hf_mtl[onnx]"


def require_onnx(module: str) -> ModuleType:
    """Imports `onnx` or `onnxruntime` (the optional `onnx` extra), or raises [`HfMtlError`] naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise HfMtlError(f"ONNX export and serving need the {module} package: {ONNX_EXTRA}") from None


def output_name(task: str) -> str:
    """The graph output holding `task`'s logits."""
    return f"logits_{task}"


class OnnxMultiTaskModel:
    r"""
    A multi-task model exported by [`~hf_mtl.export.export_onnx`], run by ONNX Runtime on the CPU.

    Calling it with the tokenizer's tensors returns a [`MultiTaskModelOutput`] whose `logits` hold each task's scores
    as torch tensors, as [`MultiTaskModel`] does, so the `multitask` pipeline runs it unchanged:

    ```python
    >>> import hf_mtl
    >>> from transformers import pipeline

    >>> pipe = pipeline("multitask", model="outputs/demo-onnx")  # doctest: +SKIP
    >>> model = hf_mtl.OnnxMultiTaskModel.from_pretrained("outputs/demo-onnx", num_threads=1)  # doctest: +SKIP
    >>> pipe = pipeline("multitask", model=model, tokenizer="outputs/demo-onnx")  # doctest: +SKIP
    ```

    Args:
        session (`onnxruntime.InferenceSession`): The loaded graph.
        config ([`MultiTaskConfig`]): The exported model's config (tasks, labels, `max_seq_length`).
        name_or_path (`str`, *optional*): The folder it was loaded from.
    """

    main_input_name = "input_ids"
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, session: Any, config: MultiTaskConfig, name_or_path: str | None = None):
        self.session = session
        self.config = config
        self.name_or_path = name_or_path
        self.input_names = [node.name for node in session.get_inputs()]
        self._outputs = [(task.name, output_name(task.name)) for task in config.task_specs]

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, num_threads: int | None = None, file_name: str = ONNX_FILE, **kwargs
    ) -> OnnxMultiTaskModel:
        """Loads `model_dir/model.onnx` and its `config.json` on ONNX Runtime's CPU execution provider.

        Args:
            model_dir (`str` or `Path`): A folder written by `python -m hf_mtl.export`.
            num_threads (`int`, *optional*): ONNX Runtime's intra-op threads; defaults to torch's
                (`torch.get_num_threads()`), so that both backends use the same cores.
            file_name (`str`, *optional*, defaults to `"model.onnx"`): The graph's file in `model_dir`.
            kwargs: Hub arguments that `transformers.pipeline()` passes to every model class (`revision`,
                `_from_pipeline`, ...); they do not apply to a local folder and are ignored.

        Raises `OSError` when `model_dir` holds no graph (so that `pipeline()` tries its other model classes) and
        [`HfMtlError`] when `onnxruntime` is not installed.
        """
        path = Path(model_dir) / file_name
        if not path.is_file():
            raise OSError(f"{model_dir}: no {file_name}; export one with `python -m hf_mtl.export`")
        onnxruntime = require_onnx("onnxruntime")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle ONNX Runtime threads would spin for a while after each run, on the cores the pipeline's torch
        # post-processing (softmax, max per text) needs next: measured, that made each small torch op ~1 ms.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        config = MultiTaskConfig.from_pretrained(model_dir)
        return cls(session, config, name_or_path=str(model_dir))

    def __call__(self, **inputs: torch.Tensor) -> MultiTaskModelOutput:
        return self.forward(**inputs)

    def forward(self, **inputs: torch.Tensor) -> MultiTaskModelOutput:
        """Runs the graph on the tokenizer's tensors (`input_ids`, `attention_mask`, ...; one row per text).

        Returns a [`MultiTaskModelOutput`] with only `logits` set (no labels, no loss)."""
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise HfMtlError(f"{self.name_or_path}: the ONNX graph needs the input(s) {missing}")
        feed = {name: inputs[name].numpy() for name in self.input_names}
        values = self.session.run([name for _, name in self._outputs], feed)
        return MultiTaskModelOutput(
            logits={task: torch.from_numpy(value) for (task, _), value in zip(self._outputs, values)}
        )

    def to(self, device: str | torch.device) -> OnnxMultiTaskModel:
        """ONNX Runtime runs this model on the CPU only; `to("cpu")` is a no-op, any other device raises."""
        if torch.device(device).type != "cpu":
            raise HfMtlError(f"OnnxMultiTaskModel runs on the CPU execution provider only, not on {device}")
        return self


__all__ = ["ONNX_EXTRA", "ONNX_FILE", "OnnxMultiTaskModel", "output_name", "require_onnx"]
