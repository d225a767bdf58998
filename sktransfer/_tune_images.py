"""Fine-tuning the top blocks of a torchvision network on labelled images (used by FineTuningClassifier).

The network's ``features`` sequence is split in two. The lower blocks stay frozen (in ``eval()``:
their BatchNorm statistics never move, unlike a ``requires_grad`` freeze) and, when inputs are not
augmented, their output is computed once per image by an [`ImageEncoder`][sktransfer.ImageEncoder] at that
layer with ``pooling=None``: through its embedding cache, so a grid over learning rates or a second
fit reads it instead of running the lower network again. Only the top blocks and a new linear
layer are trained, on those activations. With augmentation, every epoch decodes each image with a
random resized crop and a flip and runs the frozen blocks on it (the slow path).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
from sklearn.base import clone
from torch import nn

from . import _backbones
from ._device import autocast
from ._images import ImageDataset, collate
from ._runtime import data_loader
from .image import ImageEncoder

__all__ = ["ImageTuner", "trunk_blocks"]


def trunk_blocks(network: nn.Module) -> nn.Sequential:
    """The network's sequence of feature blocks (MobileNet, EfficientNet, ConvNeXt, VGG, DenseNet...)."""
    features = getattr(network, "features", None)
    if not isinstance(features, nn.Sequential) or len(features) < 2:
        raise ValueError(
            f"FineTuningClassifier tunes the top blocks of networks whose trunk is a `features` sequence "
            f"(MobileNet, EfficientNet, ConvNeXt, VGG, DenseNet...); {type(network).__name__} has none. "
            "Choose such a model, or use a frozen ImageEncoder."
        )
    return features


def _output_node(network: nn.Module, block: int) -> str:
    """The graph node that outputs ``features[block]``, for ImageEncoder(layer=...)."""
    from torchvision.models.feature_extraction import get_graph_node_names

    prefix = f"features.{block}"
    nodes = [n for n in get_graph_node_names(network)[1] if n == prefix or n.startswith(prefix + ".")]
    return nodes[-1]


class _Top(nn.Module):
    """The network from block ``split`` on, its penultimate output, and a new linear layer."""

    def __init__(self, network: nn.Module, split: int, n_classes: int):
        super().__init__()
        network.features = network.features[split:]  # a slice keeps the original block names
        head = _backbones.last_linear(network)
        _backbones.set_submodule(network, head, nn.Identity())
        self.network = network
        self.classifier = None
        self.n_classes = n_classes

    def embed(self, activations: torch.Tensor) -> torch.Tensor:
        return self.network(activations)


@dataclasses.dataclass
class ImageTuner:
    """Tunes the top ``unfreeze`` blocks of a fitted ImageEncoder's torchvision network."""

    encoder: ImageEncoder
    unfreeze: object  # int (top blocks) or "all"
    augment: bool
    learning_rate: float
    batch_size: int
    max_epochs: int
    precision: str
    seed: int

    def start(self, items: list, train_rows: np.ndarray, labels: np.ndarray) -> None:
        """Build the frozen lower blocks and the trainable top; train on ``items[train_rows]``."""
        encoder = self.encoder
        if not isinstance(encoder.model, str):
            raise ValueError("FineTuningClassifier tunes torchvision models named by a string; a module passed as "
                             "ImageEncoder(model=...) is used frozen only.")
        if encoder.model.startswith("timm:"):
            raise ValueError(f"FineTuningClassifier tunes torchvision models; {encoder.model!r} is a timm backbone, "
                             "used frozen only for now: put a classifier on ImageEncoder's features, or tune a "
                             "torchvision model (e.g. 'efficientnet_b0', 'mobilenet_v2').")
        self.device = torch.device(encoder.device_)
        weights = _backbones.resolve_weights(encoder.model, encoder.weights)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # weights=None already warned in the encoder's fit
            network = _backbones.load_torchvision(encoder.model, weights)
        if encoder.layer is not None:
            raise ValueError("FineTuningClassifier tunes the network's penultimate representation; use an "
                             "ImageEncoder with layer=None.")
        blocks = trunk_blocks(network)
        n_top = len(blocks) if self.unfreeze == "all" else int(self.unfreeze)
        if not 1 <= n_top <= len(blocks):
            raise ValueError(f"unfreeze={self.unfreeze!r}: {encoder.model} has {len(blocks)} feature blocks; choose "
                             f"1 to {len(blocks)}, or 'all'.")
        self.split = len(blocks) - n_top
        self.node = _output_node(network, self.split - 1) if self.split else None
        self.lower = blocks[: self.split].eval().requires_grad_(False).to(self.device)
        self.top = _Top(network, self.split, int(labels.max()) + 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            dim = encoder.embedding_dim_
            self.top.classifier = nn.Linear(dim, self.top.n_classes)
        self.top.to(self.device)
        self.items, self.train_rows, self.labels = list(items), np.asarray(train_rows), np.asarray(labels)
        self.rng = np.random.default_rng(self.seed)
        self.optimizer = torch.optim.Adam(self.top.parameters(), lr=self.learning_rate)
        self._activations = None

    # ------------------------------------------------------------------ inputs of the top blocks
    def activations(self) -> torch.Tensor:
        """Non-augmented input of the top blocks for every item: the frozen lower output, computed once."""
        if self._activations is not None:
            return self._activations
        items = self.items
        if self.split:
            lower = clone(self.encoder).set_params(layer=self.node, pooling=None)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*features per image.*")
                flat = lower.fit(items[:1]).transform(items)  # through the encoder's cache, if any
            shape = self._lower_shape()
        else:
            flat, shape = self._preprocessed(items), None
        bad = np.flatnonzero(~np.isfinite(flat.reshape(len(items), -1)).all(axis=1))
        if bad.size:
            raise ValueError(f"FineTuningClassifier could not encode the training image at index {bad[0]}: every "
                             "training image must be readable (fix or remove it).")
        tensor = torch.from_numpy(np.ascontiguousarray(flat))
        self._activations = tensor.view(len(items), *shape) if shape is not None else tensor
        return self._activations

    def _lower_shape(self) -> tuple:
        side = self.encoder.preprocess_.crop_size[0] if hasattr(self.encoder.preprocess_, "crop_size") else 224
        with torch.inference_mode():
            out = self.lower(torch.zeros(1, 3, side, side, device=self.device))
        return tuple(out.shape[1:])

    def _preprocessed(self, items: list, transform=None) -> np.ndarray:
        # The encoder's fitted value_range: tuning reads float and 16-bit images as encoding does.
        value_range = self.encoder.identity_.settings.get("value_range")
        dataset = ImageDataset(items, transform or self.encoder.preprocess_, None, None,
                                None if value_range is None else tuple(value_range))
        loader = data_loader(dataset, batch_size=self.batch_size, num_workers=0, device=self.device, collate_fn=collate)
        out = None
        for index, batch, errors in loader:
            if errors:
                raise ValueError(f"FineTuningClassifier could not read the training image at index {errors[0][0]}: "
                                 f"{errors[0][1]}")
            if out is None:
                out = np.empty((len(items), *batch.shape[1:]), dtype=np.float32)
            out[index] = batch.numpy()
        return out.reshape(len(items), -1) if self.split else out

    def _augment_transform(self):
        from torchvision import transforms

        preset = self.encoder.preprocess_
        side = preset.crop_size[0] if hasattr(preset, "crop_size") else 224
        mean = getattr(preset, "mean", (0.485, 0.456, 0.406))
        std = getattr(preset, "std", (0.229, 0.224, 0.225))
        return transforms.Compose([
            transforms.RandomResizedCrop(side), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(mean, std),
        ])

    # ------------------------------------------------------------------ training
    def train_epoch(self, epoch: int, progress) -> float:
        """One pass over the training images; returns the mean training loss."""
        self.top.train()
        labels = torch.as_tensor(self.labels)
        losses = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + epoch)  # dropout and augmentation, reproducibly
            if self.augment:
                images = torch.from_numpy(self._augmented_inputs())
            else:
                images = self.activations()[torch.as_tensor(self.train_rows)]
            order = self.rng.permutation(len(self.train_rows))
            for start in progress(range(0, len(order), self.batch_size)):
                batch = torch.as_tensor(order[start : start + self.batch_size])
                inputs = images[batch].to(self.device)
                if self.augment and self.split:
                    with torch.no_grad(), autocast(self.device, self.precision):
                        inputs = self.lower(inputs).float()
                with autocast(self.device, self.precision):
                    logits = self.top.classifier(self.top.embed(inputs).float())
                    loss = nn.functional.cross_entropy(logits.float(), labels[batch].to(self.device))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                losses.append(float(loss.detach()))
        self.top.eval()
        return float(np.mean(losses))

    def _augmented_inputs(self) -> np.ndarray:
        """Each training image decoded with a fresh random crop and flip (seeded by the caller)."""
        split, self.split = self.split, 0  # keep the (N, C, H, W) layout
        try:
            return self._preprocessed([self.items[i] for i in self.train_rows], self._augment_transform())
        finally:
            self.split = split

    def features(self) -> np.ndarray:
        """Penultimate features of every item with the top blocks as tuned so far."""
        self.top.eval()
        inputs = self.activations()
        out = []
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, len(inputs), 64):
                out.append(self.top.embed(inputs[start : start + 64].to(self.device)).float().cpu())
        return torch.cat(out).numpy()

    def restore(self, state: dict) -> None:
        """Put back the tensors of an earlier `snapshot` (the best epoch)."""
        prefix = len("features.")
        self.top.network.features.load_state_dict({name[prefix:]: tensor for name, tensor in state.items()})

    def snapshot(self) -> dict:
        """The top blocks' tensors (BatchNorm statistics included), named as in the full network."""
        return {f"features.{name}": tensor.detach().clone()
                for name, tensor in self.top.network.features.state_dict().items()}
