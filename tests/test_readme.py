"""The README's Python example runs as written (on the tiny encoder, for two steps, in a temporary folder)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_api_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_python_example_uses_only_hf_mtl_names_and_runs(tiny_dir, tmp_path, monkeypatch):
    code = _python_api_block()
    imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["import hf_mtl"]
    for original, fast in (
        ('"sentence-transformers/all-MiniLM-L6-v2"', repr(str(tiny_dir))),
        ("num_train_epochs=10", "max_steps=2, report_to='none'"),
    ):
        assert original in code
        code = code.replace(original, fast)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    output_dir = tmp_path / "outputs" / "api"
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()
    assert 0.0 <= namespace["trainer"].final_metrics["test_combined_score"] <= 1.0
    assert namespace["trainer"].state.global_step == 2
