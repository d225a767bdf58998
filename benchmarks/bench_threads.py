"""Thread settings: what sktransfer does to torch's process-wide thread count, and what n_threads costs.

Part 1 runs in a fresh interpreter and records ``torch.get_num_threads()`` and
``torch.get_num_interop_threads()`` after each step a user takes: importing torch, importing
sktransfer, constructing, fitting and transforming with each encoder, and transforming with
``n_threads=1`` and with TextEncoder's default ``n_streams="auto"`` over several batches (both
also read from inside the forward pass). The encoders must never change the setting on import,
construction or fit; ``n_threads`` and the split between streams may apply only inside ``transform``.

Part 2 times ``transform`` with ``n_threads=1`` against the default (torch's own setting, every
core) for texts and images, alternating, so the cost of limiting threads, e.g. for joblib
workers that share the cores, is visible as a ratio.

Usage: python benchmarks/bench_threads.py [--n-texts 1000] [--n-images 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DATA_DIR, Table, hymenoptera_files, machine_description, read_sst2, run_json_child, summary,
    time_alternating,
)

PROBE = r"""
import json, sys
import torch
steps = []
def record(step):
    steps.append([step, torch.get_num_threads(), torch.get_num_interop_threads()])
record("import torch")
import sktransfer
from sktransfer import ImageEncoder, TextEncoder
record("import sktransfer")
texts, images = json.loads(sys.argv[1]), json.loads(sys.argv[2])
text, image = TextEncoder(device="cpu"), ImageEncoder(weights="IMAGENET1K_V1", device="cpu")
record("construct TextEncoder and ImageEncoder")
text.fit(texts); image.fit(images)
record("fit both")
text.transform(texts); image.transform(images)
record("transform both (n_threads=None)")
inside = []
limited = TextEncoder(device="cpu", n_threads=1).fit(texts)
original = TextEncoder._encode_batch
def spy(self, model, batch):
    inside.append(torch.get_num_threads())
    return original(self, model, batch)
TextEncoder._encode_batch = spy
limited.transform(texts)
steps.append(["inside transform with n_threads=1", inside[0], torch.get_num_interop_threads()])
record("after transform with n_threads=1")
inside.clear()
TextEncoder(device="cpu", batch_size=2).fit(texts).transform(texts)  # several batches: streams start
steps.append(["inside a streamed TextEncoder transform (n_streams='auto', 4 batches)", inside[0],
              torch.get_num_interop_threads()])
record("after the streamed transform")
print(json.dumps(steps))
"""


def thread_probe(texts, images) -> list:
    return run_json_child(["-c", PROBE, json.dumps(texts), json.dumps(images)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-texts", type=int, default=1000)
    parser.add_argument("--n-images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from sktransfer import ImageEncoder, TextEncoder

    print(f"Machine: {machine_description()}")
    texts = read_sst2(DATA_DIR / "sst2" / "stsa.binary.train")[0][: args.n_texts]
    images = [f for f in hymenoptera_files() if not f.endswith(".gif")][: args.n_images]
    steps = thread_probe(texts[:8], images[:2])
    tables = [Table(
        "Torch thread settings seen by a fresh process, step by step",
        ["step", "torch.get_num_threads()", "torch.get_num_interop_threads()"],
        [[step, str(n), str(interop)] for step, n, interop in steps],
        notes=["Only transform changes the intra-op count, and only while it runs: n_threads=1 sets it, and "
               "TextEncoder's streams (n_streams='auto' on a CPU with 2+ threads) split it between the "
               "batches they encode at once."],
    ).show()]

    rows = []
    workloads = [
        ("texts", f"{len(texts)} SST-2 sentences", lambda **kw: TextEncoder(device="cpu", **kw), texts),
        ("images", f"{len(images)} hymenoptera photos",
         lambda **kw: ImageEncoder(weights="IMAGENET1K_V1", device="cpu", **kw), images),
    ]
    for _, label, make, items in workloads:
        default, single = make().fit(items), make(n_threads=1).fit(items)
        default.transform(items[:8])  # warm-up outside the timing
        times = time_alternating(
            {"default": lambda: default.transform(items), "n_threads=1": lambda: single.transform(items)},  # noqa: B023 (called within the iteration)
            args.repeats,
        )
        base = np.median(times["default"])
        for name, seconds in times.items():
            rows.append([label, f"{name} ({torch.get_num_threads() if name == 'default' else 1} threads)",
                         summary(seconds), f"{base / np.median(seconds):.2f}x"])
    tables.append(Table(
        f"transform with n_threads=1 vs the default, {args.repeats} alternating repetitions",
        ["input", "setting", "time (this machine)", "speed vs default"],
        rows,
        notes=["n_threads suits processes that share the cores (joblib workers, several encoders); with the "
               "cores to itself an encoder is fastest at the default."],
    ).show())
    return tables


if __name__ == "__main__":
    main()
