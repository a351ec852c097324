"""An exponential moving average of the weights over training (Polyak averaging), as a Trainer callback."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)

EMA_WEIGHTS_NAME = "ema_weights.safetensors"  # in a checkpoint folder, beside the model's own weights
_COUNT_KEY = "__n_averaged__"


class WeightAveragingCallback(TrainerCallback):
    """Keeps an exponential moving average of the model's parameters, updated after every optimizer step
    (`torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn(decay)`), and puts it into the model when
    training ends, so that the evaluations after training and the saved model use the averaged weights.
    [`MultiTaskTrainer`] adds it under `--ema_decay`, saves the average in every checkpoint and restores it on resume.

    Args:
        decay (`float`):
            Weight of the running average at each step: after step t, `ema = decay * ema + (1 - decay) * weights`;
            the first step copies the weights. `1 / (1 - decay)` steps is the average's horizon (100 for 0.99).
    """

    def __init__(self, decay: float):
        self.decay = decay
        self.averaged: AveragedModel | None = None
        self._resumed: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay))
        if self._resumed is not None:
            saved, self._resumed = self._resumed, None
            self.averaged.n_averaged.fill_(int(saved.pop(_COUNT_KEY).item()))
            with torch.no_grad():
                for name, param in self.averaged.module.named_parameters():
                    param.copy_(saved[name])

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.averaged.update_parameters(model)

    @torch.no_grad()
    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.averaged is None or self.averaged.n_averaged.item() == 0:
            return
        for averaged, current in zip(self.averaged.module.parameters(), model.parameters(), strict=True):
            current.copy_(averaged)
        self.averaged = None

    def save(self, folder: str | Path) -> None:
        """Writes the average and its step count into a checkpoint folder."""
        if self.averaged is None:
            return
        tensors = {name: param.detach().contiguous() for name, param in self.averaged.module.named_parameters()}
        tensors[_COUNT_KEY] = self.averaged.n_averaged.detach().clone()
        save_file(tensors, str(Path(folder) / EMA_WEIGHTS_NAME))

    def resume_from(self, folder: str | Path) -> None:
        """Reads the average saved in a checkpoint folder; training then goes on averaging from it."""
        path = Path(folder) / EMA_WEIGHTS_NAME
        if not path.is_file():
            logger.warning(f"{folder} holds no {EMA_WEIGHTS_NAME}: the weights' average starts again from here")
            return
        self._resumed = load_file(str(path))
