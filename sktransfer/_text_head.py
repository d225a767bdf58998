"""TextEncoder's head, from token vectors to one text vector: pooling, hidden layers, long-text windows.

`resolve_head` gives *effective* settings (two choices computing the same vectors get the same ones), which
`sentence_vectors` and `output_vectors` compute; `TokenNetwork` and `RuntimeTransformer` run it in a backend."""

from __future__ import annotations

import numbers

import torch

__all__ = ["POOLINGS", "RuntimeTransformer", "TokenNetwork", "chunk_average", "output_vectors", "resolve_head",
           "sentence_vectors", "transformer_of"]

POOLINGS = ("model", "mean", "cls", "max")

#: Consecutive windows of a long text share this fraction of a window (``long_text="chunk"``).
CHUNK_OVERLAP = 0.25


def _own_modules(model) -> list:
    return list(model)[1:]


def _own_pooling(model):
    """The model's own head as (pooling mode, ends in Normalize) when it is a plain pooling, else None."""
    modules = _own_modules(model)
    names = [type(m).__name__ for m in modules]
    if not modules or names[0] != "Pooling" or any(n != "Normalize" for n in names[1:]) or len(names) > 2:
        return None
    mode = modules[0].pooling_mode
    if not isinstance(mode, str) or mode not in POOLINGS or not getattr(modules[0], "include_prompt", True):
        return None
    return mode, len(names) == 2


def transformer_of(model, name: str):
    auto_model = getattr(model[0], "auto_model", None)
    if auto_model is None:
        raise ValueError(
            f"{name!r} does not start with a transformer module ({type(model[0]).__name__}), so it has no "
            "token vectors or hidden layers to pool: leave pooling='model' and layers=None for this model.")
    return auto_model


def _layer_indices(layers, n_layers: int, name: str) -> tuple:
    """Hidden-state indices in [0, n_layers] (0 = embeddings, n_layers = last layer)."""
    wanted = [layers] if isinstance(layers, numbers.Integral) else list(layers)
    if not wanted:
        raise ValueError("layers is empty; pass None for the last layer, or layer indices such as [-4, -3, -2, -1].")
    indices = []
    for layer in wanted:
        if not isinstance(layer, numbers.Integral) or isinstance(layer, bool):
            raise ValueError(f"layers must hold integers, got {layer!r}.")
        index = int(layer) + n_layers + 1 if layer < 0 else int(layer)
        if not 0 <= index <= n_layers:
            raise ValueError(
                f"layer {layer} does not exist in {name!r}, which has {n_layers} layers after its embedding "
                f"layer: use -{n_layers + 1}..-1 or 0..{n_layers} (0 is the embedding layer, -1 the last layer).")
        indices.append(index)
    if len(set(indices)) != len(indices):
        raise ValueError(f"layers {list(wanted)} names a layer twice ({indices} counted from the embedding layer).")
    return tuple(indices)


def resolve_head(model, name: str, *, pooling: str, layers, layer_combine: str, normalize: bool) -> tuple:
    """``(settings, dimension, hidden_states)``: ``settings`` holds ``normalize``, and ``pooling``, ``layers``
    and ``layer_combine`` only where they differ from the model's own head (the defaults keep old fingerprints)."""
    own = _own_pooling(model)
    own_normalizes = type(list(model)[-1]).__name__ == "Normalize"
    settings, width = {}, 1
    if layers is not None:
        n_layers = int(transformer_of(model, name).config.num_hidden_layers)
        indices = _layer_indices(layers, n_layers, name)
        if indices != (n_layers,):
            settings["layers"] = list(indices)
            if len(indices) > 1:
                settings["layer_combine"] = layer_combine
                width = len(indices) if layer_combine == "concat" else 1
    # The model's own modules (for a plain pooling with normalize=True, the same computation).
    own_head = pooling == "model" or (own is not None and pooling == own[0] and (normalize or not own[1]))
    if not own_head:
        settings["pooling"] = pooling
    elif width > 1 and own is None:
        raise ValueError(
            f"layer_combine='concat' makes token vectors {width} times wider, which {name!r}'s own modules "
            f"after pooling ({', '.join(type(m).__name__ for m in _own_modules(model)[1:])}) cannot take: "
            "choose pooling='mean', 'cls' or 'max', or layer_combine='mean' or 'sum'.")
    settings["normalize"] = bool(normalize) or (own_head and own_normalizes)
    if own_head and width == 1 and _own_modules(model):
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dimension = int(get_dim())
    else:
        dimension = int(transformer_of(model, name).config.hidden_size) * width
    if settings.get("layer_combine") == "sum" and settings["normalize"] and ("pooling" in settings or own is not None):
        # A sum is a mean times the number of layers; pooling then unit length removes the scale.
        settings["layer_combine"] = "mean"
    return settings, dimension, "layers" in settings


def _combined_tokens(features: dict, settings: dict) -> torch.Tensor:
    hidden = features["all_layer_embeddings"]
    chosen = [hidden[i] for i in settings["layers"]]
    if len(chosen) == 1:
        return chosen[0]
    combine = settings["layer_combine"]
    if combine == "concat":
        return torch.cat(chosen, dim=-1)
    stacked = torch.stack(chosen)
    return stacked.sum(0) if combine == "sum" else stacked.mean(0)


def sentence_vectors(model, features: dict, settings: dict) -> torch.Tensor:
    """One vector per row of ``features`` (tokenized inputs), before the output's normalisation."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    if not _own_modules(model) or "pooling" in settings or "layers" in settings:
        features = model[0](features)
        if "layers" in settings:
            features["token_embeddings"] = _combined_tokens(features, settings)
        if "pooling" in settings or not _own_modules(model):
            mode = settings.get("pooling", "mean")
            return Pooling(features["token_embeddings"].shape[-1], mode)(features)["sentence_embedding"]
        for module in _own_modules(model):
            features = module(features)
        return features["sentence_embedding"]
    return model(features)["sentence_embedding"]


def output_vectors(model, features: dict, settings: dict, *, chunked: bool = False, vectors=None) -> torch.Tensor:
    """Pooled vectors of tokenized inputs, unit length if asked; ``vectors`` (pooled already, e.g. averaged
    windows, ``chunked``) skips the forward pass."""
    if vectors is None:
        vectors = sentence_vectors(model, features, settings)
    own_normalize = type(list(model)[-1]).__name__ == "Normalize" and "pooling" not in settings
    if settings["normalize"] and (chunked or not own_normalize):
        vectors = torch.nn.functional.normalize(vectors.float(), p=2, dim=1)
    return vectors


def chunk_average(vectors: torch.Tensor, owners: torch.Tensor, tokens: torch.Tensor, n_texts: int) -> torch.Tensor:
    """Average window vectors per text, each weighted by its number of tokens."""
    device = vectors.device
    weights, owners = tokens.to(device, torch.float32), owners.to(device)
    total = torch.zeros((n_texts, vectors.shape[1]), dtype=torch.float32, device=device)
    counts = torch.zeros(n_texts, dtype=torch.float32, device=device).index_add_(0, owners, weights)
    return total.index_add_(0, owners, vectors.float() * weights[:, None]) / counts[:, None]


class TokenNetwork(torch.nn.Module):
    """The module a backend exports: last-layer token vectors, or every layer's stacked when ``hidden_states``."""

    def __init__(self, auto_model, inputs: tuple, hidden_states: bool):
        super().__init__()
        self.auto_model, self.inputs, self.hidden_states = auto_model, inputs, hidden_states

    def forward(self, *tensors):
        out = self.auto_model(**dict(zip(self.inputs, tensors)), output_hidden_states=self.hidden_states,
                              return_dict=True)
        return torch.stack(out.hidden_states) if self.hidden_states else out.last_hidden_state


class RuntimeTransformer(torch.nn.Module):
    """Stands in for the transformers model inside sentence-transformers' Transformer module: runs the exported
    `TokenNetwork` with torch's thread count and answers as the model would, so the head's code is torch's."""

    def __init__(self, network, config, inputs: tuple, hidden_states: bool):
        super().__init__()
        self.network, self.config, self.inputs, self.hidden_states = network, config, inputs, hidden_states

    def forward(self, **features):
        arrays = [features[name].cpu().numpy() for name in self.inputs]
        (tokens,) = self.network.run(arrays, torch.get_num_threads())
        tokens = torch.from_numpy(tokens)
        if not self.hidden_states:
            return {"last_hidden_state": tokens}
        return {"last_hidden_state": tokens[-1], "hidden_states": tuple(tokens)}
