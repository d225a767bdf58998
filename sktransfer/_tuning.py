"""What both tuners share (the text tuner, `sktransfer._tune_text`, and the image tuner,
`sktransfer._tune_images`): the contract FineTuningClassifier drives, seeding and the optimiser step."""

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
    """Run the block with torch's CPU generator seeded, then give the caller its own state back."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclasses.dataclass
class Tuner:
    """What FineTuningClassifier drives: ``start``, then ``train_epoch``, ``features``, ``snapshot``, ``restore``.

    A tuner's ``start`` sets ``optimizer`` (and ``scheduler``, if any) and its ``batch_losses``
    yields one loss a batch; the seeding and the optimiser step are the same for every tuner.
    """

    encoder: BaseEncoder
    unfreeze: object  # int (top layers or blocks), "all" or, for texts, "lora"
    learning_rate: float
    batch_size: int
    max_epochs: int
    precision: str
    seed: int
    scheduler = None

    def new_classifier(self, n_classes: int, device) -> nn.Linear:
        """The temporary linear layer on the embeddings, initialised from the seed."""
        with seeded(self.seed):
            return nn.Linear(self.encoder.embedding_dim_, n_classes).to(device)

    def train_epoch(self, epoch: int, progress) -> float:
        """One pass over the training items; returns the mean training loss."""
        with seeded(self.seed * 1000 + epoch):  # dropout and augmentation, reproducibly
            return float(np.mean([self._step(loss) for loss in self.batch_losses(progress)]))

    def _step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.detach())
