"""Tiny random BERT-family checkpoints, saved in the layouts the Hub uses, each with a tokenizer of its own kind.

Every family gets a tokenizer trained here with the `tokenizers` library on the demo sentences, through the
normalizer and pre-tokenizer of the family's `transformers` tokenizer class (so the pieces match what that class
produces): WordPiece (BERT, DistilBERT, ELECTRA), byte-level BPE (RoBERTa), SentencePiece-style Unigram with
Metaspace (ALBERT, DeBERTa-v2, XLM-RoBERTa). Models: hidden 32, 2 layers, 2 heads, intermediate 37, fixed seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AlbertConfig,
    AlbertForMaskedLM,
    AlbertModel,
    AlbertTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertModel,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2ForMaskedLM,
    DebertaV2Model,
    DebertaV2Tokenizer,
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertModel,
    DistilBertTokenizer,
    ElectraConfig,
    ElectraForPreTraining,
    ElectraModel,
    ElectraTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaModel,
    RobertaTokenizer,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaModel,
    XLMRobertaTokenizer,
)

DEMO_DATA = Path(__file__).resolve().parents[1] / "hf_mtl" / "demo_data"
SEED = 0
VOCAB_SIZE = 600
MAX_POSITIONS = 64
SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


@dataclass(frozen=True)
class Family:
    """One encoder family: its config, the classes its checkpoints are saved from, and its tokenizer."""

    name: str
    config_class: type[PretrainedConfig]
    config_kwargs: dict[str, Any]
    layouts: dict[str, type[PreTrainedModel]]
    has_pooler: dict[str, bool]
    """Per layout: whether the saved checkpoint holds a pooler."""
    tokenizer_class: type[PreTrainedTokenizerBase]
    tokenizer_kind: str
    special_tokens: tuple[str, ...]
    model_max_length: int = MAX_POSITIONS

    @property
    def base_model_prefix(self) -> str:
        return self.layouts["bare"].base_model_prefix


_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

_FAMILIES = [
    Family(
        "bert",
        BertConfig,
        SIZE,
        {"pretraining": BertForPreTraining, "maskedlm": BertForMaskedLM, "bare": BertModel},
        {"pretraining": True, "maskedlm": False, "bare": True},
        BertTokenizer,
        "wordpiece",
        _BERT_SPECIALS,
    ),
    Family(
        "roberta",
        RobertaConfig,
        {**SIZE, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
        {"pretraining": RobertaForMaskedLM, "bare": RobertaModel},
        {"pretraining": False, "bare": True},
        RobertaTokenizer,
        "bpe",
        _ROBERTA_SPECIALS,
        # RoBERTa numbers positions from padding_idx + 1: two of the 64 positions are never used.
        model_max_length=MAX_POSITIONS - 2,
    ),
    Family(
        "distilbert",
        DistilBertConfig,
        {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 37},
        {"pretraining": DistilBertForMaskedLM, "bare": DistilBertModel},
        {"pretraining": False, "bare": False},
        DistilBertTokenizer,
        "wordpiece",
        _BERT_SPECIALS,
    ),
    Family(
        "albert",
        AlbertConfig,
        {**SIZE, "embedding_size": 16},
        {"pretraining": AlbertForMaskedLM, "bare": AlbertModel},
        {"pretraining": False, "bare": True},
        AlbertTokenizer,
        "unigram",
        ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"),
    ),
    Family(
        "electra",
        ElectraConfig,
        # The discriminator's embeddings are smaller than its hidden size, as in google/electra-*-discriminator.
        {**SIZE, "embedding_size": 16},
        {"pretraining": ElectraForPreTraining, "bare": ElectraModel},
        {"pretraining": False, "bare": False},
        ElectraTokenizer,
        "wordpiece",
        _BERT_SPECIALS,
    ),
    Family(
        "deberta-v2",
        DebertaV2Config,
        # DeBERTa-v3's choices (relative attention, shared keys, no absolute positions, no token types), small.
        {
            **SIZE,
            "relative_attention": True,
            "position_buckets": 16,
            "max_relative_positions": MAX_POSITIONS,
            "pos_att_type": ["p2c", "c2p"],
            "norm_rel_ebd": "layer_norm",
            "share_att_key": True,
            "position_biased_input": False,
            "type_vocab_size": 0,
            # The masked-LM head of microsoft/deberta-v2-* checkpoints: `lm_predictions.lm_head.*`.
            "legacy": False,
        },
        {"pretraining": DebertaV2ForMaskedLM, "bare": DebertaV2Model},
        {"pretraining": False, "bare": False},
        DebertaV2Tokenizer,
        "unigram",
        ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"),
    ),
    Family(
        "xlm-roberta",
        XLMRobertaConfig,
        {**SIZE, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
        {"pretraining": XLMRobertaForMaskedLM, "bare": XLMRobertaModel},
        {"pretraining": False, "bare": True},
        XLMRobertaTokenizer,
        "unigram",
        _ROBERTA_SPECIALS,
        model_max_length=MAX_POSITIONS - 2,
    ),
]

FAMILIES: dict[str, Family] = {family.name: family for family in _FAMILIES}
LAYOUTS = ("pretraining", "maskedlm", "bare")
CASES: list[tuple[str, str]] = [(family.name, layout) for family in _FAMILIES for layout in family.layouts]
"""Every (family, layout) pair: `pretraining` is the class the Hub stores the family's main checkpoint with,
`maskedlm` (BERT only) is `BertForMaskedLM`, `bare` is the family's `*Model` saved on its own."""


@cache
def demo_rows() -> list[dict[str, Any]]:
    """Every row of the demo set (train, validation, test), in file order."""
    rows = []
    for split in ("train", "validation", "test"):
        text = (DEMO_DATA / f"{split}.jsonl").read_text()
        rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return rows


@cache
def build_tokenizer(family: str) -> PreTrainedTokenizerBase:
    """The family's tokenizer class with a vocabulary trained on the demo sentences (through that class's own
    normalizer and pre-tokenizer), the family's special tokens first, in the family's order.

    The trainers choose the same pieces on every run, but WordPiece numbers them and Unigram scores them in an order
    that varies from run to run: WordPiece pieces are numbered in sorted order here, and Unigram pieces are scored by
    their log frequency as substrings of the demo words, so that every build gives the same tokenizer."""
    spec = FAMILIES[family]
    template = spec.tokenizer_class().backend_tokenizer
    specials = list(spec.special_tokens)
    unk = next(token for token in specials if "unk" in token.lower())
    if spec.tokenizer_kind == "wordpiece":
        backend = Tokenizer(models.WordPiece(unk_token=unk))
        trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials)
    elif spec.tokenizer_kind == "bpe":
        backend = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    else:
        backend = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, unk_token=unk)
    backend.normalizer = template.normalizer
    backend.pre_tokenizer = template.pre_tokenizer
    sentences = [" ".join(row["tokens"]) for row in demo_rows()]
    backend.train_from_iterator(sentences, trainer=trainer)
    trained = json.loads(backend.to_str())["model"]
    kwargs: dict[str, Any] = {"model_max_length": spec.model_max_length}
    if spec.tokenizer_kind == "wordpiece":
        pieces = sorted(set(trained["vocab"]) - set(specials))
        kwargs["vocab"] = {piece: index for index, piece in enumerate(specials + pieces)}
    elif spec.tokenizer_kind == "bpe":
        kwargs["vocab"] = trained["vocab"]
        kwargs["merges"] = [tuple(pair) for pair in trained["merges"]]
    else:
        pieces = sorted({piece for piece, _ in trained["vocab"]} - set(specials))
        kwargs["vocab"] = [(token, 0.0) for token in specials] + _unigram_scores(pieces, backend, sentences)
    return spec.tokenizer_class(**kwargs)


def _unigram_scores(pieces: list[str], backend: Tokenizer, sentences: list[str]) -> list[tuple[str, float]]:
    """Each piece with the log of its relative frequency as a substring of the pre-tokenized demo words."""
    known = set(pieces)
    longest = max(map(len, pieces))
    counts = dict.fromkeys(pieces, 1)
    for sentence in sentences:
        normalized = backend.normalizer.normalize_str(sentence) if backend.normalizer else sentence
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized):
            for start in range(len(word)):
                for end in range(start + 1, min(len(word), start + longest) + 1):
                    if word[start:end] in known:
                        counts[word[start:end]] += 1
    total = sum(counts.values())
    return [(piece, math.log(counts[piece] / total)) for piece in pieces]


def build_checkpoint(family: str, layout: str, folder: Path) -> Path:
    """Saves a tiny random checkpoint of `family` in `layout` (safetensors) with its tokenizer into `folder`."""
    spec = FAMILIES[family]
    tokenizer = build_tokenizer(family)
    config = spec.config_class(vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS, **spec.config_kwargs)
    torch.manual_seed(SEED)
    model = spec.layouts[layout](config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def encoder_state(family: str, layout: str, folder: Path) -> dict[str, torch.Tensor]:
    """The encoder tensors of a saved checkpoint, keyed as in the family's `*Model` (prefix stripped, heads left
    out)."""
    tensors = load_file(folder / "model.safetensors")
    if layout == "bare":
        return tensors
    prefix = FAMILIES[family].base_model_prefix + "."
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def build_renamed_layer_checkpoint(folder: Path) -> Path:
    """A BERT pretraining checkpoint whose layer 1 is saved as `bert.encoder.block.1.*`: to an `AutoModel`, every
    tensor of that layer is missing."""
    build_checkpoint("bert", "pretraining", folder)
    path = folder / "model.safetensors"
    tensors = load_file(path)
    renamed = {key.replace("bert.encoder.layer.1.", "bert.encoder.block.1."): value for key, value in tensors.items()}
    save_file(renamed, path, metadata={"format": "pt"})
    return folder


class CheckpointCache:
    """Builds each (family, layout) checkpoint once under `root` (share one per pytest session)."""

    def __init__(self, root: Path):
        self.root = root

    def get(self, family: str, layout: str) -> Path:
        folder = self.root / f"{family}-{layout}"
        if not (folder / "model.safetensors").is_file():
            build_checkpoint(family, layout, folder)
        return folder
