"""Raw sentences in, the joint pipeline's answers out: `run_mtl.py --do_predict --predict_file`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import HfMtlError

logger = logging.getLogger(__name__)


def read_texts(path: str) -> list[str]:
    """Sentences from a `.txt` file (one per non-empty line) or a `.jsonl` file (a `text` field per line)."""
    file = Path(path)
    if not file.is_file():
        raise HfMtlError(f"--predict_file {path}: no such file")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise HfMtlError(f"--predict_file {path}: not valid utf-8") from None
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if file.suffix == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise HfMtlError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
                raise HfMtlError(f"{path}:{number}: expected an object with a non-empty 'text'")
            texts.append(record["text"])
        else:
            texts.append(line)
    if not texts:
        raise HfMtlError(f"--predict_file {path}: holds no sentence")
    return texts


def write_text_predictions(pipe, texts: list[str], path: Path, batch_size: int) -> None:
    """One JSON line per input text: `{"text": ..., **pipe(text)}`."""
    with path.open("w", encoding="utf-8") as handle:
        for text, prediction in zip(texts, pipe(texts, batch_size=batch_size)):
            handle.write(json.dumps({"text": text, **prediction}, ensure_ascii=False) + "\n")


def label_texts(model, tokenizer, texts: list[str], output_dir: str | Path, batch_size: int = 32) -> dict[str, float]:
    """`--predict_file`: the multitask pipeline's answers, one JSON line per text in `text_predictions.jsonl`."""
    from .pipeline import MultiTaskPipeline

    path = Path(output_dir) / "text_predictions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_predictions(MultiTaskPipeline(model=model.eval(), tokenizer=tokenizer), texts, path, batch_size)
    logger.info("Predictions for %d sentences written to %s", len(texts), path)
    return {"predict_samples": len(texts)}
