"""Raw sentences in, the joint pipeline's answers out: `run_mtl.py --do_predict --predict_file`."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import HfMtlError


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
