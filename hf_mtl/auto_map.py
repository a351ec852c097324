"""`auto_map` for saved models: `AutoModel.from_pretrained(dir, trust_remote_code=True)` works without `import hf_mtl`.

The folder gets two one-line modules that import the *installed* hf_mtl classes, instead of copies of hf_mtl's
source (what `register_for_auto_class` would save): with `trust_remote_code=True` the only code read from the
folder is that import, so a model folder cannot bring code of its own.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_MODULE = "configuration_hf_mtl"
MODEL_MODULE = "modeling_hf_mtl"
AUTO_MAP = {"AutoConfig": f"{CONFIG_MODULE}.MultiTaskConfig", "AutoModel": f"{MODEL_MODULE}.MultiTaskModel"}

_SHIM = '''"""Loads {name} from the installed `hf_mtl` package; nothing else runs from this folder."""

from hf_mtl.{module} import {name}  # noqa: F401
'''


def write_config_module(folder: str | Path) -> None:
    Path(folder, f"{CONFIG_MODULE}.py").write_text(_SHIM.format(module="configuration_mtl", name="MultiTaskConfig"))


def write_model_module(folder: str | Path) -> None:
    Path(folder, f"{MODEL_MODULE}.py").write_text(_SHIM.format(module="modeling_mtl", name="MultiTaskModel"))
