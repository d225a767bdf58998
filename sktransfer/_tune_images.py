"""`ImageTuner`: fine-tunes the top blocks of a torchvision network's ``features`` (for FineTuningClassifier).

The lower blocks stay in ``eval()``; without augmentation their output is computed once by an ImageEncoder
at that layer (``pooling=None``), so a second fit or grid point reads it from the embedding cache."""

from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy as np
import torch
from sklearn.base import clone
from torch import nn

from . import _backbones
from ._device import autocast
from ._images import ImageDataset, collate
from ._runtime import data_loader
from ._tuning import Tuner
from .image import ImageEncoder

__all__ = ["ImageTuner"]


def _output_node(network: nn.Module, block: int) -> str:
    from torchvision.models.feature_extraction import get_graph_node_names

    prefix = f"features.{block}"
    return [n for n in get_graph_node_names(network)[1] if n == prefix or n.startswith(prefix + ".")][-1]


@dataclasses.dataclass
class ImageTuner(Tuner):
    """Tunes the top ``unfreeze`` blocks and a new linear layer of a fitted ImageEncoder's network."""

    encoder: ImageEncoder
    augment: bool

    def start(self, items: list, train_rows: np.ndarray, labels: np.ndarray) -> None:
        encoder = self.encoder
        if not isinstance(encoder.model, str):
            raise ValueError("FineTuningClassifier tunes torchvision models named by a string; a module passed as "
                             "ImageEncoder(model=...) is used frozen only.")
        if encoder.model.startswith("timm:"):
            raise ValueError(f"FineTuningClassifier tunes torchvision models; {encoder.model!r} is a timm backbone, "
                             "used frozen only for now: put a classifier on ImageEncoder's features, or tune a "
                             "torchvision model (e.g. 'efficientnet_b0', 'mobilenet_v2').")
        if encoder.layer is not None:
            raise ValueError("FineTuningClassifier tunes the network's penultimate representation; use an "
                             "ImageEncoder with layer=None.")
        self.device = torch.device(encoder.device_)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # weights=None already warned in the encoder's fit
            network = _backbones.TorchvisionSource(encoder.model, encoder.weights).create()
        blocks = getattr(network, "features", None)
        if not isinstance(blocks, nn.Sequential) or len(blocks) < 2:
            raise ValueError(
                f"FineTuningClassifier tunes the top blocks of networks whose trunk is a `features` sequence "
                f"(MobileNet, EfficientNet, ConvNeXt, VGG, DenseNet...); {type(network).__name__} has none. "
                "Choose such a model, or use a frozen ImageEncoder.")
        n_top = len(blocks) if self.unfreeze == "all" else int(self.unfreeze)
        if not 1 <= n_top <= len(blocks):
            raise ValueError(f"unfreeze={self.unfreeze!r}: {encoder.model} has {len(blocks)} feature blocks; choose "
                             f"1 to {len(blocks)}, or 'all'.")
        self.split = len(blocks) - n_top
        self.node = _output_node(network, self.split - 1) if self.split else None
        self.lower = blocks[: self.split].eval().requires_grad_(False).to(self.device)
        network.features = blocks[self.split :]  # a slice keeps the original block names
        _backbones.set_submodule(network, _backbones.last_linear(network), nn.Identity())
        self.network = network.to(self.device)  # the top blocks, up to the penultimate output
        self.classifier = self.new_classifier(int(labels.max()) + 1, self.device)
        self.items, self.train_rows, self.labels = list(items), np.asarray(train_rows), np.asarray(labels)
        self.rng = np.random.default_rng(self.seed)
        self.optimizer = torch.optim.Adam([*self.network.parameters(), *self.classifier.parameters()],
                                          lr=self.learning_rate)
        self.steps_per_epoch = -(-len(self.train_rows) // self.batch_size)
        self.__dict__.pop("activations", None)  # a new start computes them again

    def adopt_inputs(self, other: ImageTuner) -> None:
        """Reuse ``other``'s frozen-block activations (started on the same items): computed once per fit."""
        self.__dict__["activations"] = other.activations

    @functools.cached_property
    def activations(self) -> torch.Tensor:
        """Non-augmented input of the top blocks for every item, computed once."""
        if not self.split:
            return torch.from_numpy(self._preprocessed(self.items))
        lower = clone(self.encoder).set_params(layer=self.node, pooling=None)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*features per image.*")
            flat = lower.fit(self.items[:1]).transform(self.items)  # through the encoder's cache, if any
        with torch.inference_mode():
            shape = self.lower(torch.zeros(1, 3, self._side(), self._side(), device=self.device)).shape[1:]
        return torch.from_numpy(np.ascontiguousarray(flat)).view(len(self.items), *shape)

    def _side(self) -> int:
        return getattr(self.encoder.preprocess_, "crop_size", (224,))[0]

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
        return out

    def _augment_transform(self):
        from torchvision import transforms

        preset = self.encoder.preprocess_
        return transforms.Compose([
            transforms.RandomResizedCrop(self._side()), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(getattr(preset, "mean", (0.485, 0.456, 0.406)),
                                 getattr(preset, "std", (0.229, 0.224, 0.225))),
        ])

    def batch_losses(self, progress):
        self.network.train()
        labels = torch.as_tensor(self.labels)
        if self.augment:  # each training image decoded with a fresh random crop and flip
            images = torch.from_numpy(self._preprocessed([self.items[i] for i in self.train_rows],
                                                         self._augment_transform()))
        else:
            images = self.activations[torch.as_tensor(self.train_rows)]
        order = self.rng.permutation(len(self.train_rows))
        for start in progress(range(0, len(order), self.batch_size)):
            batch = torch.as_tensor(order[start : start + self.batch_size])
            inputs = images[batch].to(self.device)
            if self.augment and self.split:
                with torch.no_grad(), autocast(self.device, self.precision):
                    inputs = self.lower(inputs).float()
            with autocast(self.device, self.precision):
                logits = self.classifier(self.network(inputs).float())
                loss = nn.functional.cross_entropy(logits.float(), labels[batch].to(self.device))
            yield loss

    def features(self) -> np.ndarray:
        self.network.eval()
        inputs = self.activations
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = [self.network(inputs[s : s + 64].to(self.device)).float().cpu() for s in range(0, len(inputs), 64)]
        return torch.cat(out).numpy()

    def restore(self, state: dict) -> None:
        self.network.load_state_dict(state)

    def snapshot(self) -> dict:
        """Every tensor of the trained top, head layers before the replaced linear one included (VGG's)."""
        return {name: tensor.detach().clone() for name, tensor in self.network.state_dict().items()}
