"""A tokenizer that splits a sentence the same way in training (pre-split words) and at inference (raw text)."""

from __future__ import annotations

import json
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase


def _has_byte_level_pre_tokenizer(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("type") == "ByteLevel":
            return True
        return any(_has_byte_level_pre_tokenizer(child) for child in node.get("pretokenizers") or [])
    return False


def is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether a fast tokenizer pre-tokenizes with GPT-2's byte-level scheme (RoBERTa, DeBERTa v1, Longformer), where
    a word's pieces differ with and without the leading-space marker `Ġ`."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return _has_byte_level_pre_tokenizer(json.loads(backend.to_str()).get("pre_tokenizer"))


def load_tokenizer(name_or_path: str, **kwargs) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained`, with `add_prefix_space=True` for byte-level BPE tokenizers.

    Training tokenises pre-split words (`is_split_into_words=True`), the pipeline tokenises raw text. A byte-level
    tokenizer without `add_prefix_space` gives the first word, and every pre-split word, no `Ġ` marker, while raw
    text gives every word but the first one: the model would see other pieces at inference than in training. With
    `add_prefix_space=True` both paths give every word its marker (as `run_ner.py` does for RoBERTa-style models),
    and the setting is saved with the tokenizer, so the pipeline of a saved model uses it too. WordPiece (BERT,
    DistilBERT, ELECTRA) and SentencePiece-style Metaspace tokenizers (ALBERT, DeBERTa-v2, XLM-RoBERTa) already split
    both ways alike and load unchanged.

    Args:
        name_or_path (`str`): A Hub id or local folder, as for `AutoTokenizer.from_pretrained`.
        kwargs: Passed to `AutoTokenizer.from_pretrained`.
    """
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if (
        "add_prefix_space" not in kwargs
        and is_byte_level(tokenizer)
        and not getattr(tokenizer, "add_prefix_space", False)
    ):
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, add_prefix_space=True, **kwargs)
    return tokenizer


__all__ = ["is_byte_level", "load_tokenizer"]
