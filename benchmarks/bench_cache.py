"""What the embedding cache buys in cross-validated grid searches, and how fast a full hit is.

For texts (SST-2 sentences, TextEncoder) and images (hymenoptera photos, ImageEncoder), three
ways to run a 5-fold x 6-value GridSearchCV over LogisticRegression's C:

* **encode once** (the named baseline: what a careful user writes by hand): encode every item
  once, then grid-search LogisticRegression on the precomputed array;
* **cached pipeline**: ``GridSearchCV(Pipeline(Encoder(cache=...), LogisticRegression))`` with a
  fresh cache, the one-liner sktransfer is for;
* **uncached pipeline**: the same without a cache (every fold and candidate re-encodes).

Then a full-hit lookup of 10,000 texts, from disk (fresh process state, memory layer off) and
from the in-process memory layer.

Usage: python benchmarks/bench_cache.py [--n-texts 1000] [--n-images 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_DIR, Table, hymenoptera_files, machine_description, read_sst2, summary  # noqa: E402

from sktransfer import EmbeddingCache, ImageEncoder, TextEncoder  # noqa: E402
from sktransfer.cache import forget_process_state  # noqa: E402

GRID = {"logisticregression__C": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}
HEAD_GRID = {"C": GRID["logisticregression__C"]}


def grid_comparison(make_encoder, X, y, repeats, uncached_repeats):
    """Time the three strategies; returns {name: [seconds...]} and the cache's miss count."""
    times = {"encode once + grid on arrays (baseline)": [], "cached pipeline": [], "uncached pipeline": []}
    misses = None
    make_encoder().fit(X[:1])  # load the model into the registry once, outside every timing
    for rep in range(repeats):
        start = time.perf_counter()
        features = make_encoder().fit(X).transform(X)
        GridSearchCV(LogisticRegression(max_iter=2000), HEAD_GRID, cv=5).fit(features, y)
        times["encode once + grid on arrays (baseline)"].append(time.perf_counter() - start)

        with tempfile.TemporaryDirectory() as folder:
            cache = EmbeddingCache(folder)
            start = time.perf_counter()
            pipe = make_pipeline(make_encoder(cache=cache), LogisticRegression(max_iter=2000))
            GridSearchCV(pipe, GRID, cv=5).fit(X, y)
            times["cached pipeline"].append(time.perf_counter() - start)
            misses = cache.stats.misses
            forget_process_state(folder)

        if rep < uncached_repeats:
            start = time.perf_counter()
            pipe = make_pipeline(make_encoder(), LogisticRegression(max_iter=2000))
            GridSearchCV(pipe, GRID, cv=5).fit(X, y)
            times["uncached pipeline"].append(time.perf_counter() - start)
    return times, misses


def report(title, times, n_unique, misses):
    base = np.median(times["encode once + grid on arrays (baseline)"])
    rows = [
        [name, summary(seconds), str(len(seconds)), f"{np.median(seconds) / base:.2f}x"]
        for name, seconds in times.items()
        if seconds
    ]
    return Table(
        f"{title}: 5-fold x 6-value GridSearchCV (31 pipeline fits)",
        ["strategy", "time (this machine)", "runs", "time vs baseline"],
        rows,
        notes=[f"{n_unique} distinct items; the cached pipeline encoded {misses} of them (each once)."],
        chart={"kind": "bar", "labels": [r[0] for r in rows],
               "values": [float(np.median(times[r[0]])) for r in rows], "xlabel": "seconds (this machine)"},
    ).show()


def full_hit(texts, repeats):
    """Lookup rate of a cache that already holds every text."""
    with tempfile.TemporaryDirectory() as folder:
        encoder = TextEncoder(cache=EmbeddingCache(folder), precision="bf16", batch_size=64).fit(texts)
        encoder.transform(texts)  # fill
        results = {}
        for label, memory in [("from disk (memory layer off)", 0), ("from the in-process memory layer", 256 * 2**20)]:
            seconds = []
            for _ in range(repeats):
                forget_process_state(folder)  # fresh process state
                cache = EmbeddingCache(folder, memory_bytes=memory)
                enc = TextEncoder(cache=cache, precision="bf16").fit(texts[:1])
                _ = enc.identity_.fingerprint  # the one-off hash is not part of a lookup
                if memory:
                    enc.transform(texts)  # warm the memory layer
                start = time.perf_counter()
                enc.transform(texts)
                seconds.append(time.perf_counter() - start)
                assert cache.stats.last["misses"] == 0
            results[label] = seconds
        forget_process_state(folder)
    return results


def full_hit_images(photos, n_paths, repeats):
    """Lookup rate of 1,000 image paths that are all in the cache, in a process that has seen them.

    The paths are copies of the photos in a temporary folder (``n_paths`` distinct files, so
    ``n_paths`` content keys to look up). Each lookup stats the file; only a file whose stat
    signature changed is read again. The copies are left to age past the two-second window in
    which a just-written file is never memoised.
    """
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(n_paths):
            target = Path(folder) / f"{i:05d}{Path(photos[i % len(photos)]).suffix}"
            target.write_bytes(Path(photos[i % len(photos)]).read_bytes() + i.to_bytes(4, "little"))
            paths.append(str(target))
        time.sleep(2.5)
        cache_folder = Path(folder) / "cache"
        encoder = ImageEncoder(weights="IMAGENET1K_V1", cache=EmbeddingCache(cache_folder, memory_bytes=0)).fit(paths)
        encoder.transform(paths)  # fill the cache and the process's file memo
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            encoder.transform(paths)
            seconds.append(time.perf_counter() - start)
            assert encoder.cache.stats.last["misses"] == 0
        forget_process_state(cache_folder)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-texts", type=int, default=1000, help="SST-2 sentences in the text grid search")
    parser.add_argument("--n-images", type=int, default=100, help="photos in the image grid search")
    parser.add_argument("--n-hit", type=int, default=10_000, help="texts in the full-hit lookup")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--uncached-repeats", type=int, default=1, help="the uncached grid is slow: run it fewer times")
    parser.add_argument("--n-hit-images", type=int, default=1000, help="image paths in the full-hit lookup")
    parser.add_argument("--full-hits-only", action="store_true", help="only the two full-hit lookups (a minute)")
    args = parser.parse_args(argv)

    texts, labels = read_sst2(DATA_DIR / "sst2" / "stsa.binary.train")
    print(f"Machine: {machine_description()}")
    photos = [f for f in hymenoptera_files() if "/train/" in f and not f.endswith(".gif")]
    if args.full_hits_only:
        return full_hit_tables(texts, photos, args)

    X, y = texts[: args.n_texts], labels[: args.n_texts]
    times, misses = grid_comparison(lambda **kw: TextEncoder(**kw), X, y, args.repeats, args.uncached_repeats)
    tables = [report(f"Text: TextEncoder(all-MiniLM-L6-v2), {len(X)} SST-2 sentences", times, len(set(X)), misses)]

    rng = np.random.default_rng(0)
    pick = sorted(rng.choice(len(photos), min(args.n_images, len(photos)), replace=False))
    X_img = [photos[i] for i in pick]
    y_img = np.array(["/bees/" in p for p in X_img], dtype=int)
    times, misses = grid_comparison(
        lambda **kw: ImageEncoder(weights="IMAGENET1K_V1", **kw), X_img, y_img, args.repeats, args.uncached_repeats
    )
    tables.append(report(f"Images: ImageEncoder(mobilenet_v2, IMAGENET1K_V1), {len(X_img)} photos", times,
                         len(set(X_img)), misses))

    return tables + full_hit_tables(texts, photos, args)


def full_hit_tables(texts, photos, args):
    """The two full-hit lookups: 10,000 texts from a fresh process state, 1,000 image paths in a warm one."""
    tables = []
    pool = texts + read_sst2(DATA_DIR / "sst2" / "stsa.binary.test")[0] + read_sst2(DATA_DIR / "sst2" / "stsa.binary.dev")[0]
    hit_texts = [f"{t} [{i}]" for i, t in enumerate((pool * (args.n_hit // len(pool) + 1))[: args.n_hit])]
    results = full_hit(hit_texts, args.repeats)
    tables.append(Table(
        f"Full hit: transform of {len(hit_texts):,} distinct texts that are all in the cache",
        ["lookup", "time (this machine)", "texts/s"],
        [[label, summary(seconds), f"{len(hit_texts) / np.median(seconds):,.0f}"] for label, seconds in results.items()],
        notes=["Timed from a fresh cache object (the one-off hash of the model files excluded); no item is encoded."],
    ).show())
    seconds = full_hit_images(photos, args.n_hit_images, args.repeats)
    tables.append(Table(
        f"Full hit: transform of {args.n_hit_images:,} image paths that are all in the cache",
        ["lookup", "time (this machine)", "paths/s"],
        [["ImageEncoder(mobilenet_v2), memory layer off, files seen before in this process", summary(seconds),
          f"{args.n_hit_images / np.median(seconds):,.0f}"]],
        notes=["One stat per path; a file is read again only when its stat signature (inode, size, mtime, ctime) "
               "changed."],
    ).show())
    return tables


if __name__ == "__main__":
    main()
