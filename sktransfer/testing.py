"""Helpers for testing pipelines built on sktransfer without network access or real weights."""

from __future__ import annotations

import torch

from ._runtime import quiet_hugging_face

__all__ = ["make_tiny_clip"]


def _byte_characters():
    """The 256 printable characters byte-level BPE maps bytes to (GPT-2's table)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = kept[:], 0
    for byte in range(256):
        if byte not in kept:
            kept.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def make_tiny_clip(folder) -> str:
    """Save a tiny randomly initialised CLIP (about 0.3 MB) with its processor into ``folder``.

    For testing pipelines built on [`ClipEncoder`][sktransfer.ClipEncoder] without network access or
    real weights: the model loads, tokenizes, preprocesses and encodes exactly as a real CLIP
    folder does, but its vectors mean nothing. It has 2 layers of width 32 in each tower, 32 x 32
    input images, a 16-dimensional shared space, and CLIP's own byte-level BPE tokenizer with a
    minimal vocabulary (every byte, alone and word-final, plus a few merges). The weights are
    seeded, so the same folder is built every time.

    Parameters
    ----------
    folder : str or os.PathLike
        Where to save it (created).

    Returns
    -------
    str
        The folder, for ``ClipEncoder(model=...)``.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for character in _byte_characters():
        vocab[character] = len(vocab)
        vocab[character + "</w>"] = len(vocab)
    merges = [("b", "e"), ("be", "e</w>"), ("a", "n"), ("an", "t</w>")]
    for token in ("be", "bee</w>", "an", "ant</w>"):
        vocab[token] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(config).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    with quiet_hugging_face():  # "Writing model shards" for a 0.3 MB file is noise
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return str(folder)
