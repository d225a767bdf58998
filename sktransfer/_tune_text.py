"""`TextTuner`: fine-tunes a sentence-transformers model through the encoder's own head (for FineTuningClassifier).

Objectives: docs/adapting.md. Not ``SentenceTransformerTrainer``: it needs ``datasets`` and ``accelerate``
and owns the epoch loop, which the estimator stops; ``SoftmaxLoss`` classifies pairs of texts, not texts."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss
from sentence_transformers.util import batch_to_device
from torch import nn

from ._device import autocast
from ._runtime import optional_import
from ._text_head import output_vectors
from ._tuning import Tuner, seeded
from ._weights import apply_weights
from .text import TOKENIZER_LOCK, TextEncoder

__all__ = ["TextTuner", "contrastive_pairs"]

#: Rounds of one positive and one negative partner per text and epoch (SetFit's ``num_iterations``).
#: On the SST-2 dev split (100 labels, 3 draws) 2 rounds for 3 epochs at 5e-5 gained as much over frozen +
#: the tuned head as 5 rounds for 2 epochs at 2e-5 (+4.8 and +4.7 points) in 0.6 of the time.
PAIR_ROUNDS = 2

#: Most pairs per epoch: beyond about 100 labelled texts more pairs cost time linearly and gained
#: little in SetFit-style runs on SST-2 (500 sentences: 2000 pairs in all reached 0.805).
MAX_PAIRS_PER_EPOCH = 1000

#: Rank of the LoRA adapters of ``unfreeze="lora"`` (alpha is twice the rank, as is common).
LORA_RANK = 8


def _transformer_layers(model) -> nn.ModuleList:
    backbone = model[0].auto_model
    stacks = [module for module in backbone.modules() if isinstance(module, nn.ModuleList) and len(module) > 1]
    if not stacks:
        raise ValueError("unfreeze=<int> needs a transformer with a stack of layers; use unfreeze='all'.")
    return max(stacks, key=len)


def contrastive_pairs(labels: np.ndarray, rounds: int, rng: np.random.Generator,
                      limit: int | None = None) -> list[tuple[int, int, float]]:
    """SetFit's pairs, per text and round one same-class and one other-class partner; shuffled, the first ``limit``."""
    by_class = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    pairs = []
    for _ in range(rounds):
        for i, label in enumerate(labels):
            same = by_class[label][by_class[label] != i]
            other = np.flatnonzero(labels != label)
            pairs.append((i, int(rng.choice(same)), 1.0))
            pairs.append((i, int(rng.choice(other)), 0.0))
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order[:limit]]


@dataclasses.dataclass
class TextTuner(Tuner):
    """Tunes a fresh float32 copy of a fitted TextEncoder's model; the encoder itself stays frozen."""

    encoder: TextEncoder
    objective: str
    pair_rounds: int = PAIR_ROUNDS  # the contrastive objective's; benchmarks/bench_text_recipe.py varies it

    def start(self, texts: list, train_rows: np.ndarray, labels: np.ndarray) -> None:
        self.model = self.encoder.trainable_model()
        self.model.requires_grad_(False)
        self.lora = self.unfreeze == "lora"
        if self.lora:
            self._add_lora()
        elif self.unfreeze == "all":
            self.model.requires_grad_(True)
        else:
            for layer in list(_transformer_layers(self.model))[-int(self.unfreeze):]:
                layer.requires_grad_(True)
        self.all_texts = list(texts)
        self.texts, self.labels = [self.all_texts[i] for i in train_rows], np.asarray(labels)
        self.rng = np.random.default_rng(self.seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.objective == "classification":
            self.classifier = self.new_classifier(int(self.labels.max()) + 1, self.model.device)
            params += list(self.classifier.parameters())
            examples = len(self.texts)
        else:
            self.pair_loss = CosineSimilarityLoss(self.model)
            examples = min(2 * self.pair_rounds * len(self.texts), MAX_PAIRS_PER_EPOCH)
        self.optimizer = torch.optim.AdamW(params, lr=self.learning_rate)
        self.steps_per_epoch = math.ceil(examples / self.batch_size)
        steps = self.max_epochs * self.steps_per_epoch
        warmup = max(1, int(0.1 * steps))  # SetFit's warmup_proportion
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
        self.trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]

    def _add_lora(self) -> None:
        peft = optional_import("peft", "lora", 'unfreeze="lora"')
        module = self.model[0]
        config = peft.LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.1, target_modules="all-linear")
        with seeded(self.seed):  # the adapters' A matrices start random (B at zero)
            module.auto_model = peft.get_peft_model(module.auto_model, config)

    def _lora_layers(self):
        from peft.tuners.lora import LoraLayer

        for name, layer in self.model.named_modules():
            if isinstance(layer, LoraLayer) and "default" in layer.lora_A:
                # peft nests the transformer as <where it was>.base_model.model.<its own names>
                yield f"{name.replace('base_model.model.', '', 1)}.weight", layer

    def _embed(self, texts: list) -> torch.Tensor:
        settings = self.encoder.identity_.settings
        with TOKENIZER_LOCK:
            features = self.model.preprocess(texts, prompt=settings.get("prompt") or None,
                                             processing_kwargs={"text": {"max_length": self.encoder.max_length_}})
        return output_vectors(self.model, batch_to_device(features, self.model.device), settings)

    def batch_losses(self, progress):
        self.model.train()
        device, contrastive = self.model.device, self.objective == "contrastive"
        rows = contrastive_pairs(self.labels, self.pair_rounds, self.rng, MAX_PAIRS_PER_EPOCH) if contrastive \
            else self.rng.permutation(len(self.texts))
        for batch in progress([rows[s : s + self.batch_size] for s in range(0, len(rows), self.batch_size)]):
            with autocast(device, self.precision):
                if contrastive:
                    target = torch.tensor([t for _, _, t in batch], dtype=torch.float32, device=device)
                    left = self._embed([self.texts[i] for i, _, _ in batch])
                    right = self._embed([self.texts[j] for _, j, _ in batch])
                    loss = self.pair_loss.compute_loss_from_embeddings([left, right], target)
                else:
                    logits = self.classifier(self._embed([self.texts[i] for i in batch]).float())
                    loss = nn.functional.cross_entropy(logits, torch.as_tensor(self.labels[batch], device=device))
            yield loss

    def features(self) -> np.ndarray:
        self.model.eval()
        slot = {text: i for i, text in enumerate(dict.fromkeys(self.all_texts))}
        encoded, _ = self.encoder.encode_texts(self.model, list(slot), None)
        return encoded[[slot[text] for text in self.all_texts]]

    def restore(self, state: dict) -> None:
        if not self.lora:
            apply_weights(self.model, state, "TextEncoder")
            return
        with torch.no_grad():
            for weight, layer in self._lora_layers():
                for factor in ("lora_A", "lora_B"):
                    getattr(layer, factor)["default"].weight.copy_(state[f"{weight}.{factor}"])

    def snapshot(self) -> dict:
        """The tensors tuning changed, named as in the pretrained model; with LoRA each adapted weight ``W``'s
        two factors and scale (the tuned model computes ``W + scale * B @ A``)."""
        if not self.lora:
            state = self.model.state_dict()
            return {name: state[name].detach().clone() for name in self.trainable}
        state = {}
        for weight, layer in self._lora_layers():
            for factor in ("lora_A", "lora_B"):
                state[f"{weight}.{factor}"] = getattr(layer, factor)["default"].weight.detach().clone()
            state[f"{weight}.lora_scale"] = torch.tensor(float(layer.scaling["default"]))
        return state
