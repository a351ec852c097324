"""`python -m hf_mtl.export MODEL_DIR OUTPUT_DIR [--quantize int8] [--opset N]`: the command line of
[`~hf_mtl.onnx_export.export_onnx`].

Kept apart from the library code so that `import hf_mtl` never imports this module, which `python -m` runs as
`__main__`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import HfMtlError
from .onnx_export import DEFAULT_OPSET, QUANTIZATIONS, export_onnx
from .onnx_model import ONNX_FILE


def main(argv: list[str] | None = None) -> int:
    """The command line: `python -m hf_mtl.export MODEL_DIR OUTPUT_DIR [--quantize int8] [--opset N]`."""
    parser = argparse.ArgumentParser(
        prog="python -m hf_mtl.export", description="Exports a trained hf_mtl model to one ONNX graph."
    )
    parser.add_argument("model_dir", help="a trained hf_mtl model (run_mtl.py's output_dir)")
    parser.add_argument("output_dir", help="where to write model.onnx, the tokenizer, config.json and README.md")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default=None, help="dynamic int8 weights")
    parser.add_argument("--opset", type=int, default=None, help=f"ONNX opset (default {DEFAULT_OPSET})")
    args = parser.parse_args(argv)
    # hf_mtl's progress at INFO; onnxruntime's quantizer logs a line per tensor at INFO on the root logger.
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s", level=logging.WARNING)
    logging.getLogger("hf_mtl").setLevel(logging.INFO)
    try:
        output_dir = export_onnx(args.model_dir, args.output_dir, quantize=args.quantize, opset=args.opset)
    except (HfMtlError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"ONNX model written to {output_dir / ONNX_FILE}")
    return 0


__all__ = ["export_onnx", "main"]  # `export_onnx` re-exported for `from hf_mtl.export import export_onnx`


if __name__ == "__main__":
    sys.exit(main())
