"""`pipeline("multitask", model=...)`: one encoder pass per text (per window of a long one), every task's answer."""

from __future__ import annotations

import bisect
import logging
import re
from typing import Any

import torch
from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import ChunkPipeline

from .onnx_model import OnnxMultiTaskModel

logger = logging.getLogger(__name__)

TASK_NAME = "multitask"
AGGREGATION_STRATEGIES = ("first", "simple")
# Texts per forward pass when the caller gives no batch_size (the Trainer-free default of other pipelines is 1).
DEFAULT_BATCH_SIZE = 32
# Default overlap of consecutive windows of a long text, as a fraction of the window: each sub-token is then read
# with at least an eighth of a window of context on either side (text ends aside), for about 1.3x the compute.
DEFAULT_STRIDE_FRACTION = 4
# Keys of a window that are not model inputs: carried through the forward pass to `postprocess`.
WINDOW_KEYS = ("offset_mapping", "word_ids", "text", "window_start", "window_index", "is_last")


class MultiTaskPipeline(ChunkPipeline):
    """Runs a multi-task model once per text and decodes every head.

    The model is a [`MultiTaskModel`] or, for serving on ONNX Runtime, an [`~hf_mtl.onnx_model.OnnxMultiTaskModel`]
    (`pipeline("multitask", model=onnx_dir)` picks it for a folder written by `python -m hf_mtl.export`): both return
    each task's logits, and everything else here is the same code.

    For each input text it returns `{"sentiment": {"label", "score"}, "entities": [...]}`: one key per sentence task
    (its name) with the top label and its probability, and for token tasks a list of entities `{"entity_group",
    "word", "start", "end", "score"}` where `text[start:end] == word`. With a single token task its key is
    `entities`; with several, each token task's key is its name.

    A list of texts runs in batches (`batch_size`, default 32 windows) of texts of similar length, longest first, so
    that padding costs almost nothing; the answers come back in the order of the input. The forward pass runs under
    `torch.inference_mode()`.

    **Long texts.** A text longer than the maximum length is read in overlapping windows (the tokenizer's
    `return_overflowing_tokens=True` with `stride` sub-tokens shared by consecutive windows), so no entity is lost:
    each sub-token takes its tag from the window where it sits farthest from a window edge (the text's own start
    and end are not edges), entities are grouped over the whole text afterwards (one that crosses a window edge comes
    out once), and offsets point into the original text. Sentence tasks average the windows' probabilities, each
    window counting once, and report the top label of that average: a review that praises in one half and pans in
    the other comes out near 0.5 rather than taking the verdict of whichever part came first.

    Args (at call time):
        aggregation_strategy (`str`, *optional*, defaults to `"first"`):
            `first`: a word takes the tag of its first sub-token (as the model was trained), entities group whole
            words; `simple`: each sub-token keeps its own tag and entities group sub-tokens, as the
            token-classification pipeline's `aggregation_strategy="simple"` does.
        max_length (`int`, *optional*): The window length in sub-tokens, special tokens included (default: the
            length the model was trained with, `config.max_seq_length`, else the tokenizer's maximum).
        stride (`int`, *optional*, defaults to `max_length // 4`): Sub-tokens shared by consecutive windows of a
            long text; `0` gives windows that touch without overlapping (every sub-token is still read once).
        truncation (`bool`, *optional*, defaults to `False`): Read only the first window of a long text, as before
            windows existed: texts that are cut log a warning, entities after the cut are not returned and sentence
            tasks see only the kept part.

    Batches are padded on the tokenizer's padding side, right or left, as in training; each window's answers are
    read from its own (attended) positions either way.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._batch_size is None:
            self._batch_size = DEFAULT_BATCH_SIZE

    def __call__(self, inputs, *args, **kwargs):
        if not (isinstance(inputs, list) and len(inputs) > 1 and all(isinstance(text, str) for text in inputs)):
            return super().__call__(inputs, *args, **kwargs)
        # Only to sort: long texts are windowed later, so the tokenizer's "longer than the maximum" note is moot.
        lengths = [len(ids) for ids in self.tokenizer(inputs, add_special_tokens=True, verbose=False)["input_ids"]]
        order = sorted(range(len(inputs)), key=lambda index: -lengths[index])
        answers = super().__call__([inputs[index] for index in order], *args, **kwargs)
        in_input_order: list[Any] = [None] * len(inputs)
        for index, answer in zip(order, answers):
            in_input_order[index] = answer
        return in_input_order

    def get_inference_context(self):
        return torch.inference_mode

    def _ensure_tensor_on_device(self, inputs, device):
        # On the CPU every tensor is already where it runs; skipping the walk over each text's word ids and offsets
        # saves about 3 % of a batched call.
        if self.device.type == "cpu" and device.type == "cpu":
            return inputs
        return super()._ensure_tensor_on_device(inputs, device)

    def _task_specs(self) -> list:
        """The model's tasks, parsed once per model config (postprocess runs once per text)."""
        config = self.model.config
        if getattr(self, "_tasks_of", None) is not config:
            self._tasks_of, self._tasks = config, config.task_specs
        return self._tasks

    def _sanitize_parameters(
        self,
        aggregation_strategy: str | None = None,
        max_length: int | None = None,
        stride: int | None = None,
        truncation: bool | None = None,
        **kwargs,
    ):
        preprocess, postprocess = {}, {}
        for name, value in (("max_length", max_length), ("stride", stride), ("truncation", truncation)):
            if value is not None:
                preprocess[name] = value
        if aggregation_strategy is not None:
            if aggregation_strategy not in AGGREGATION_STRATEGIES:
                raise ValueError(
                    f"aggregation_strategy must be one of {AGGREGATION_STRATEGIES}, got {aggregation_strategy!r}"
                )
            postprocess["aggregation_strategy"] = aggregation_strategy
        return preprocess, {}, postprocess

    def preprocess(
        self, text: str, max_length: int | None = None, stride: int | None = None, truncation: bool = False
    ):
        """Yields the text's windows (one for a text that fits), each with the index of its first sub-token in the
        whole text (`window_start`, special tokens not counted)."""
        if not isinstance(text, str):
            raise ValueError(
                f"the {TASK_NAME} pipeline takes a string (or a list of strings), got {type(text).__name__}"
            )
        max_length = (
            max_length or getattr(self.model.config, "max_seq_length", None) or self.tokenizer.model_max_length
        )
        stride = max_length // DEFAULT_STRIDE_FRACTION if stride is None else stride
        content_length = max_length - self.tokenizer.num_special_tokens_to_add()
        if not 0 <= stride < content_length:
            raise ValueError(
                f"stride must be at least 0 and less than the {content_length} sub-tokens a window of max_length "
                f"{max_length} holds, got {stride}"
            )
        encoding = self.tokenizer(
            text,
            truncation=True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        windows = len(encoding["input_ids"])
        if truncation and windows > 1:
            logger.warning("A text of more than %d sub-tokens was truncated: %r", max_length, text[:60] + "...")
            windows = 1
        window_start = 0
        for index in range(windows):
            word_ids = encoding.word_ids(index)
            inputs: dict[str, Any] = {
                key: torch.tensor([encoding[key][index]]) for key in encoding if key != "overflow_to_sample_mapping"
            }
            inputs.update(
                word_ids=word_ids,
                text=text,
                window_start=window_start,
                window_index=index,
                is_last=index == windows - 1,
            )
            yield inputs
            # The tokenizer starts each window `stride` sub-tokens before the end of the previous one.
            window_start += sum(word is not None for word in word_ids) - stride

    def _forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        carried = {key: inputs.pop(key) for key in WINDOW_KEYS}
        logits = self.model(**inputs).logits
        # Flat keys, so that the Pipeline's batching splits every tensor back per window.
        return {
            "attention_mask": inputs["attention_mask"],
            **carried,
            **{f"logits_{task}": value for task, value in logits.items()},
        }

    def postprocess(self, windows: list[dict[str, Any]], aggregation_strategy: str = "first") -> dict[str, Any]:
        tasks = self._task_specs()
        token_tasks = [task for task in tasks if task.is_token_task]
        text = windows[0]["text"]
        merged = _merge_windows(windows, [task.name for task in token_tasks])
        result: dict[str, Any] = {}
        for task in tasks:
            if not task.is_token_task:
                probabilities = torch.stack(
                    [torch.softmax(window[f"logits_{task.name}"][0].float(), dim=-1) for window in windows]
                ).mean(dim=0)
                score, index = probabilities.max(dim=-1)
                result[task.name] = {"label": task.labels[int(index)], "score": float(score)}
                continue
            units = _units(merged["offsets"], merged[task.name], task.labels, aggregation_strategy, text)
            key = "entities" if len(token_tasks) == 1 else task.name
            result[key] = [{**entity, "word": text[entity["start"] : entity["end"]]} for entity in _group(units)]
        return result


def _merge_windows(windows: list[dict[str, Any]], token_tasks: list[str]) -> dict[str, Any]:
    """One entry per sub-token of the whole text (special tokens left out): its character offsets and,
    per token task, its probabilities from the window where it sits farthest from an edge.

    A sub-token `j` positions into a window of `n` is `j` from its left edge and `n - 1 - j` from its right one; the
    first window has no left edge and the last no right edge (the text ends there). Ties go to the earlier window.
    """
    last = len(windows) - 1
    total = windows[-1]["window_start"] + sum(word is not None for word in windows[-1]["word_ids"])
    offsets: list[list[int] | None] = [None] * total
    best = torch.full((total,), -1)
    merged: dict[str, Any] = {}
    for window in windows:
        # This window's own positions in a batch padded on either side, then its text sub-tokens among them.
        attended = window["attention_mask"][0].bool()
        content = torch.tensor([word is not None for word in window["word_ids"]])
        count = int(content.sum())
        rank = torch.arange(count)
        left = rank if window["window_index"] > 0 else torch.full((count,), total)
        right = count - 1 - rank if window["window_index"] < last else torch.full((count,), total)
        distance = torch.minimum(left, right)
        positions = window["window_start"] + rank
        chosen = distance > best[positions]
        best[positions[chosen]] = distance[chosen]
        window_offsets = window["offset_mapping"][0][attended][content].tolist()
        for index in chosen.nonzero().flatten().tolist():
            offsets[positions[index]] = window_offsets[index]
        for task in token_tasks:
            probabilities = torch.softmax(window[f"logits_{task}"][0][attended][content].float(), dim=-1)
            if task not in merged:
                merged[task] = torch.empty(total, probabilities.shape[-1])
            merged[task][positions[chosen]] = probabilities[chosen]
    return {"offsets": offsets, **merged}


def _units(offsets, probabilities, labels, strategy: str, text: str) -> list[tuple[str, float, int, int]]:
    """(tag, score, start, end) per word (`first`) or per sub-token (`simple`) of the text's sub-tokens.

    `first`: a word is a run of non-space characters. That is what a training corpus of pre-split words is once its
    words are joined by spaces, so the pipeline's words are training's words whatever else the tokenizer's own
    pre-tokenizer splits (`n't`, `'s`, hyphens, a Metaspace `▁` piece): each takes the tag of its first sub-token, the
    one training labels, and spans the whole run. `simple`: each sub-token keeps its own tag, over its span without
    the spaces around it; a piece that is only a space marker is skipped.
    """
    scores, indices = probabilities.max(dim=-1)
    words = [match.span() for match in re.finditer(r"\S+", text)]
    word_starts = [start for start, _ in words]
    units: list[tuple[str, float, int, int]] = []
    previous = None
    for position, (start, end) in enumerate(offsets):
        piece = text[start:end]
        first_char = start + len(piece) - len(piece.lstrip())  # `end` for a piece that is only spaces
        tag, score = labels[int(indices[position])], float(scores[position])
        if strategy == "simple":
            last_char = end - (len(piece) - len(piece.rstrip()))
            if first_char < last_char:
                units.append((tag, score, first_char, last_char))
            continue
        word = bisect.bisect_right(word_starts, first_char) - 1
        if word < 0 or words[word][1] <= first_char:
            word += 1  # a space marker belongs to the word that follows it
        if word >= len(words) or word == previous:
            continue  # a word's later sub-tokens: its tag stays the first one's
        units.append((tag, score, *words[word]))
        previous = word
    return units


def _group(units: list[tuple[str, float, int, int]]) -> list[dict[str, Any]]:
    """IOB2 grouping: `B-X` opens an entity, `I-X` continues an open `X` (or opens one, leniently), `O` closes."""
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for tag, score, start, end in units:
        prefix, _, entity_type = tag.partition("-")
        if tag == "O" or not entity_type:
            current = None
            continue
        if prefix == "I" and current is not None and current["entity_group"] == entity_type:
            current["end"] = end
            current["scores"].append(score)
            continue
        current = {"entity_group": entity_type, "start": start, "end": end, "scores": [score]}
        entities.append(current)
    return [
        {
            "entity_group": e["entity_group"],
            "score": sum(e["scores"]) / len(e["scores"]),
            "start": e["start"],
            "end": e["end"],
        }
        for e in entities
    ]


def register_pipeline() -> None:
    """Makes `pipeline("multitask", model=...)` work; called on `import hf_mtl`.

    A folder is loaded by the first class that can: `AutoModel` (a saved [`MultiTaskModel`]), then
    [`OnnxMultiTaskModel`] (a folder written by `python -m hf_mtl.export`, which has no PyTorch weights)."""
    if TASK_NAME not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            TASK_NAME, pipeline_class=MultiTaskPipeline, pt_model=(AutoModel, OnnxMultiTaskModel), type="text"
        )


__all__ = ["MultiTaskPipeline", "register_pipeline"]
