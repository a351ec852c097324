"""`import hf_mtl`: what a serving process loads, and every public name."""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = """
import json, sys
import hf_mtl
heavy = ["transformers.trainer", "datasets", "evaluate", "onnx", "onnxruntime"]
loaded_by_import = [name for name in heavy if name in sys.modules]
from transformers import pipeline  # the `multitask` pipeline is registered by the import
from transformers.pipelines import PIPELINE_REGISTRY
registered = "multitask" in PIPELINE_REGISTRY.get_supported_tasks()
resolved = {name: type(getattr(hf_mtl, name)).__name__ for name in hf_mtl.__all__}
print(json.dumps({"loaded": loaded_by_import, "registered": registered, "resolved": resolved,
                  "dir": sorted(set(hf_mtl.__all__) - set(dir(hf_mtl)))}))
"""


def test_import_loads_no_trainer_data_or_onnx_stack_and_every_public_name_resolves():
    result = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []  # a process that serves a model imports what serving needs
    assert report["registered"] is True
    assert report["dir"] == []
    assert report["resolved"]["MultiTaskTrainer"] == "type" and report["resolved"]["export_onnx"] == "function"
    assert report["resolved"]["PerTaskAdamW"] == "type" and report["resolved"]["DEFAULT_TASKS"] == "list"
