"""TextEncoder vs raw SentenceTransformer.encode: same model, same sentences, one process.

Baseline: ``SentenceTransformer("all-MiniLM-L6-v2").encode(texts, batch_size=32)`` at fp32, the
call users would otherwise write. Candidates: ``TextEncoder().transform`` at fp32 and at
``precision="bf16"`` (bfloat16 weights), each with its default ``n_streams="auto"`` (two batches
encoded at once on a CPU with 2+ threads) and with ``n_streams=1`` (one batch at a time, as
``encode`` runs: the fp32 one-stream line is the wrapper overhead). Vectors must match. Also reported:
tokens per second, and the achieved arithmetic rate as a fraction of this machine's measured
fp32 and bf16 matmul throughput (a large square matmul), so the distance to the hardware limit
is visible. Two corpora: SST-2's short sentences (about 25 tokens: per-batch overhead weighs
most) and 2000 long stdlib docstring paragraphs (matrix products dominate, so bf16 gains most).

Usage: python benchmarks/bench_text.py [--corpus sst2|docstrings] [--limit N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DATA_DIR, Table, cosine_rows, machine_description, read_docstring_paragraphs, read_sst2, summary,
    time_alternating,
)

from sktransfer import TextEncoder  # noqa: E402


def matmul_throughput(dtype, n=2048, repeats=5) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` on the CPU (best of ``repeats``)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up (oneDNN picks its kernels)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def flops_per_token(model, mean_length: float) -> float:
    """Multiply-adds of a BERT-style encoder per token, as FLOPs (2 per multiply-add).

    Every weight matrix outside the embeddings is used once per token; attention adds
    ``4 * seq_len * hidden`` FLOPs per token and layer (scores and weighted sum).
    """
    transformer = model[0].auto_model
    config = transformer.config
    weights = sum(p.numel() for name, p in transformer.named_parameters() if p.ndim == 2 and "embeddings" not in name)
    return 2 * weights + 4 * config.num_hidden_layers * mean_length * config.hidden_size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="use only the first N sentences (smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus", choices=["sst2", "docstrings"], default="sst2",
                        help="SST-2 train (6920 short sentences) or 2000 stdlib docstring paragraphs (long texts)")
    args = parser.parse_args(argv)

    if args.corpus == "sst2":
        texts, _ = read_sst2(DATA_DIR / "sst2" / "stsa.binary.train")
        corpus = "SST-2 training sentences"
    else:
        texts = read_docstring_paragraphs(args.limit or 2000)  # the first N: a smoke run parses a few files
        corpus = "stdlib docstring paragraphs"
    texts = texts[: args.limit]
    fp32 = TextEncoder(device="cpu").fit(texts)
    bf16 = TextEncoder(device="cpu", precision="bf16").fit(texts)
    fp32_one, bf16_one = (clone(encoder).set_params(n_streams=1).fit(texts) for encoder in (fp32, bf16))
    streams = fp32._forward_streams(n_batches=-(-len(texts) // fp32.batch_size))  # what "auto" chose here
    raw = fp32.loaded_model()  # the very SentenceTransformer object, as the baseline calls it

    lengths = [len(ids) for ids in raw.tokenizer(texts, truncation=True, max_length=fp32.max_length_)["input_ids"]]
    tokens = sum(lengths)
    print(f"Machine: {machine_description()}")

    reference = raw.encode(texts, batch_size=32)
    candidates = {
        "TextEncoder fp32, one stream": fp32_one,
        "TextEncoder fp32 (default)": fp32,
        "TextEncoder bf16, one stream": bf16_one,
        "TextEncoder bf16 (default)": bf16,
    }
    outputs = {name: encoder.transform(texts) for name, encoder in candidates.items()}
    checks = {name: cosine_rows(out, reference) for name, out in outputs.items()}
    max_diff = {name: np.abs(outputs[name] - reference).max() for name in candidates if "fp32" in name}

    baseline = "SentenceTransformer.encode fp32 (baseline)"
    times = time_alternating(
        {baseline: lambda: raw.encode(texts, batch_size=32),
         **{name: (lambda encoder=encoder: encoder.transform(texts)) for name, encoder in candidates.items()}},
        args.repeats,
    )
    # A smoke run (--limit) probes a small matmul: on CPUs without bf16 instructions torch falls back
    # to a reference bf16 kernel, and 2048^3 takes minutes there.
    size = 2048 if args.limit is None else 512
    peak = {"fp32": matmul_throughput(torch.float32, size), "bf16": matmul_throughput(torch.bfloat16, size)}
    per_token = flops_per_token(raw, float(np.mean(lengths)))
    base = np.median(times[baseline])
    rows = []
    for name, seconds in times.items():
        median = float(np.median(seconds))
        precision = "bf16" if "bf16" in name else "fp32"
        achieved = tokens / median * per_token
        rows.append([
            name, summary(seconds), f"{len(texts) / median:.1f}", f"{tokens / median:,.0f}", f"{base / median:.2f}x",
            f"{checks[name].min():.6f}" if name in checks else "", f"{100 * achieved / peak[precision]:.1f} %",
        ])
    table = Table(
        f"Text: {len(texts)} {corpus} ({len(set(texts))} distinct, {tokens:,} tokens, mean "
        f"{np.mean(lengths):.1f}), all-MiniLM-L6-v2, batch 32, {args.repeats} alternating repetitions",
        ["pipeline", "time (this machine)", "texts/s", "tokens/s", "vs baseline", "min cosine",
         "% of matmul peak"],
        rows,
        notes=[
            "TextEncoder fp32 vs encode: largest absolute difference "
            + ", ".join(f"{diff:.2e} ({name.removeprefix('TextEncoder fp32').strip(' ,()')})"
                        for name, diff in max_diff.items()) + ".",
            f"(default) is n_streams='auto', which chose {streams} stream(s) of "
            f"{max(1, torch.get_num_threads() // streams)} torch thread(s) each on this machine; "
            "'one stream' runs one batch at a time on all threads, as encode does.",
            f"Matmul peak on this machine (2048x2048, best of 5): fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, "
            f"bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s; the model needs {per_token / 1e6:.1f} MFLOP per token, "
            "so '% of matmul peak' is the achieved FLOP rate over the peak of the same precision.",
        ],
        chart={"kind": "bar", "labels": list(times), "values": [len(texts) / np.median(t) for t in times.values()],
               "xlabel": "sentences per second (this machine)"},
    )
    return [table.show()]


if __name__ == "__main__":
    main()
