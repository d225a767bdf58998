"""The tuners' base (`Tuner`, driven by FineTuningClassifier) and `seeded`, shared by _tune_text and _tune_images."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch
from torch import nn

from .base import BaseEncoder

__all__ = ["Tuner", "seeded"]


@contextlib.contextmanager
def seeded(seed: int):
    """Torch's CPU generator seeded for the block; the caller's state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclasses.dataclass
class Tuner:
    """FineTuningClassifier drives ``start``, ``train_epoch``, ``features``, ``snapshot`` and ``restore``."""

    encoder: BaseEncoder
    unfreeze: object  # int (top layers or blocks), "all" or, for texts, "lora"
    learning_rate: float
    batch_size: int
    max_epochs: int
    precision: str
    seed: int
    scheduler = None

    def new_classifier(self, n_classes: int, device) -> nn.Linear:
        with seeded(self.seed):
            return nn.Linear(self.encoder.embedding_dim_, n_classes).to(device)

    steps_per_epoch = 0  # set by ``start``

    def adopt_inputs(self, other: Tuner) -> None:
        """Reuse what ``other``, started on the same items, computed from them once (nothing by default)."""

    def train_epoch(self, epoch: int, progress) -> float:
        with seeded(self.seed * 1000 + epoch):  # dropout and augmentation, reproducibly
            return float(np.mean([self._step(loss) for loss in self.batch_losses(progress)]))

    def _step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.detach())
