"""Inference backends: ImageEncoder and TextEncoder with torch, ONNX Runtime and OpenVINO, in one process.

Images (the hymenoptera photos, MobileNetV2 IMAGENET1K_V1, batch 32). Baseline: the tutorial loop
of ``bench_images.py`` (PIL, ``weights.transforms()``, torch at fp32, no overlap). Candidates:
``ImageEncoder`` with ``backend="torch"`` at fp32 and bf16, ``"onnx"`` at fp32 and ``"openvino"``
at fp32 and bf16, end to end from the files (decoding included: with a runtime, a thread decodes
the next batch while the network runs). Also the network alone on already preprocessed batches
(torch channels-last, the ONNX Runtime session, the OpenVINO compiled model), so the share of
decoding is visible. Cosines are to the baseline's features.

Texts (the first 1000 SST-2 training sentences, all-MiniLM-L6-v2, batch 32). Baseline: raw
``SentenceTransformer.encode`` at fp32. Candidates: ``TextEncoder`` with each backend and
precision, and what a user would write with the runtimes directly: the exported transformer run
by an ONNX Runtime session or an OpenVINO compiled model, batch by batch, with mean pooling and
normalisation in NumPy. Cosines are to ``encode``'s vectors.

int8 (``precision="int8"``): ONNX Runtime's dynamic quantization for the transformer, its static
quantization calibrated on the fit items for the CNN, NNCF's for OpenVINO. Downstream accuracy
beside cosine: SST-2 sentiment (all training sentences, and 100 labels in 5 draws) and hymenoptera
ants vs bees (all training photos, and 20 labels), with the same tuned head on every
configuration's vectors.

Exports are made before timing (they are made once per machine, into the export folder).

Usage: python benchmarks/bench_backends.py [--data DIR] [--limit N] [--limit-texts N] [--repeats 3]
       [--limit-accuracy N] [--draws 5]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DATA_DIR, Table, cosine_rows, hymenoptera_files, machine_description, read_sst2, summary, time_alternating,
)
from bench_images import tutorial_loop  # noqa: E402

from sktransfer import ImageEncoder, TextEncoder  # noqa: E402


def _fastest(times: dict, cosines: dict, names, floor: float):
    """The fastest of ``names`` whose min cosine reaches ``floor``, and its median seconds."""
    ok = [name for name in names if cosines.get(name, 0.0) >= floor]
    best = min(ok, key=lambda name: np.median(times[name]))
    return best, float(np.median(times[best]))


def images(args) -> Table:
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    files = hymenoptera_files(args.data)[: args.limit]
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    model = mobilenet_v2(weights=weights).eval()
    model.classifier = torch.nn.Identity()
    transform = weights.transforms()
    configs = {"ImageEncoder torch fp32": ("torch", "fp32"), "ImageEncoder torch bf16": ("torch", "bf16"),
               "ImageEncoder onnx fp32": ("onnx", "fp32"), "ImageEncoder onnx int8": ("onnx", "int8"),
               "ImageEncoder openvino fp32": ("openvino", "fp32"), "ImageEncoder openvino bf16": ("openvino", "bf16"),
               "ImageEncoder openvino int8": ("openvino", "int8")}
    encoders = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OpenVINO's bf16 on a CPU without bf16 instructions runs float32 and says so
        for name, (backend, precision) in configs.items():
            encoders[name] = ImageEncoder("mobilenet_v2", weights="IMAGENET1K_V1", device="cpu", backend=backend,
                                          precision=precision).fit(files)
    reference = tutorial_loop(files, model, transform)
    photos = np.array([not f.endswith(".gif") for f in files])
    cosines, photo_cosines = {}, {}
    for name, encoder in encoders.items():
        cos = cosine_rows(encoder.transform(files), reference)
        cosines[name], photo_cosines[name] = float(cos.min()), float(cos[photos].min()) if photos.any() else np.nan
    preprocessed = torch.stack([transform(Image.open(f).convert("RGB")) for f in files[:32]])
    channels_last = preprocessed.contiguous(memory_format=torch.channels_last)

    def network_only(encoder):
        def run():
            backbone = encoder.loaded_model()
            with torch.inference_mode():
                for start in range(0, len(files), 32):
                    batch = (channels_last if encoder.backend == "torch" else preprocessed)[: min(32, len(files) - start)]
                    backbone(batch)
        return run

    candidates = {"tutorial loop (baseline)": lambda: tutorial_loop(files, model, transform)}
    candidates.update({name: (lambda e=encoder: e.transform(files)) for name, encoder in encoders.items()})
    candidates.update({f"network only: {name.removeprefix('ImageEncoder ')}": network_only(encoders[name])
                       for name in ["ImageEncoder torch fp32", "ImageEncoder onnx fp32", "ImageEncoder onnx int8",
                                    "ImageEncoder openvino fp32", "ImageEncoder openvino bf16",
                                    "ImageEncoder openvino int8"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = time_alternating(candidates, args.repeats)
    base = np.median(times["tutorial loop (baseline)"])
    today = np.median(times["ImageEncoder torch fp32"])
    rows = []
    for name, seconds in times.items():
        median = np.median(seconds)
        cos = [f"{cosines[name]:.6f}", f"{photo_cosines[name]:.6f}"] if name in cosines else ["", ""]
        rows.append([name, summary(seconds), f"{len(files) / median:.1f}", f"{base / median:.2f}x",
                     f"{today / median:.2f}x", *cos])
    best, best_seconds = _fastest(times, photo_cosines, list(encoders), 0.99)
    not_int8 = [name for name in encoders if "int8" not in name]
    plain, plain_seconds = _fastest(times, photo_cosines, not_int8, 0.99)
    int8 = min((n for n in encoders if "int8" in n), key=lambda n: np.median(times[n]))
    table = Table(
        f"Backends, images: {len(files)} hymenoptera files, MobileNetV2 IMAGENET1K_V1, batch 32, "
        f"{args.repeats} alternating repetitions",
        ["pipeline", "time (this machine)", "images/s", "vs tutorial loop", "vs ImageEncoder torch fp32",
         "min cosine", "min cosine (photos)"],
        rows,
        notes=[
            f"fastest ImageEncoder configuration at min cosine >= 0.99 on the photos: {best}, "
            f"{base / best_seconds:.2f}x the tutorial loop and {today / best_seconds:.2f}x ImageEncoder torch fp32; "
            f"fastest int8: {int8}, {plain_seconds / np.median(times[int8]):.2f}x the fastest other configuration "
            f"at that fidelity ({plain}).",
            "end to end = from the files (decoding, preprocessing, network, pooling); network only = the same number of "
            "preprocessed images in batches of 32 through the network, no decoding.",
            "min cosine: to the tutorial loop's features; (photos) excludes the placeholder imageNotFound.gif.",
        ],
        chart={"kind": "bar", "labels": list(times), "values": [len(files) / np.median(t) for t in times.values()],
               "xlabel": "images per second (this machine)"},
    )
    return table.show()


def _raw_runtime_encode(encoder: TextEncoder, texts: list, batch_size: int = 32):
    """What a user writes with an exported transformer: tokenize, run the runtime, mean-pool, normalise."""
    model = encoder.loaded_model()
    network = model[0].auto_model.network
    tokenizer = model.tokenizer
    inputs = model[0].auto_model.inputs
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                          max_length=encoder.max_length_, return_tensors="np")
        (tokens,) = network.run([batch[name].astype(np.int64) for name in inputs])
        mask = batch["attention_mask"][..., None].astype(np.float32)
        vectors = (tokens * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
        out.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return np.concatenate(out)


def texts(args) -> Table:
    from sentence_transformers import SentenceTransformer

    sentences, _ = read_sst2(DATA_DIR / "sst2" / "stsa.binary.train")
    sentences = sentences[: args.limit_texts]
    raw = SentenceTransformer(str(TextEncoder().fit(["x"]).identity_.location), device="cpu")
    configs = {"TextEncoder torch fp32": ("torch", "fp32"), "TextEncoder torch bf16": ("torch", "bf16"),
               "TextEncoder onnx fp32": ("onnx", "fp32"), "TextEncoder onnx int8": ("onnx", "int8"),
               "TextEncoder openvino fp32": ("openvino", "fp32"), "TextEncoder openvino bf16": ("openvino", "bf16"),
               "TextEncoder openvino int8": ("openvino", "int8")}
    encoders = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (backend, precision) in configs.items():
            encoders[name] = TextEncoder(device="cpu", backend=backend, precision=precision).fit(sentences)
    candidates = {"SentenceTransformer.encode fp32 (baseline)": lambda: raw.encode(sentences, batch_size=32)}
    candidates.update({name: (lambda e=encoder: e.transform(sentences)) for name, encoder in encoders.items()})
    candidates["ONNX Runtime by hand, fp32"] = lambda: _raw_runtime_encode(encoders["TextEncoder onnx fp32"], sentences)
    candidates["OpenVINO by hand, fp32"] = lambda: _raw_runtime_encode(encoders["TextEncoder openvino fp32"], sentences)
    candidates["OpenVINO by hand, bf16 hint"] = lambda: _raw_runtime_encode(encoders["TextEncoder openvino bf16"],
                                                                            sentences)
    reference = raw.encode(sentences, batch_size=32)
    cosines = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, run in candidates.items():
            cosines[name] = float(cosine_rows(np.asarray(run()), reference).min())
        times = time_alternating(candidates, args.repeats)
    base = np.median(times["SentenceTransformer.encode fp32 (baseline)"])
    rows = [[name, summary(seconds), f"{len(sentences) / np.median(seconds):.0f}", f"{base / np.median(seconds):.2f}x",
             f"{cosines[name]:.6f}"] for name, seconds in times.items()]
    ours, ours_seconds = _fastest(times, cosines, list(encoders), 0.999)
    runtimes = [name for name in times if "by hand" in name] + [n for n in encoders if "torch" not in n]
    theirs, theirs_seconds = _fastest(times, cosines, runtimes, 0.999)
    table = Table(
        f"Backends, texts: {len(sentences)} SST-2 training sentences, all-MiniLM-L6-v2, batch 32, "
        f"{args.repeats} alternating repetitions",
        ["pipeline", "time (this machine)", "texts/s", "vs encode fp32", "min cosine"],
        rows,
        notes=[
            f"fastest TextEncoder configuration at cosine >= 0.999: {ours} ({base / ours_seconds:.2f}x encode); "
            f"fastest ONNX Runtime / OpenVINO configuration at that fidelity: {theirs} ({base / theirs_seconds:.2f}x).",
            "by hand: the exported transformer run directly by the runtime, one batch at a time, mean pooling and "
            "normalisation in NumPy (what a user writes around an exported model).",
            "min cosine: to SentenceTransformer.encode's vectors.",
        ],
        chart={"kind": "bar", "labels": list(times),
               "values": [len(sentences) / np.median(t) for t in times.values()], "xlabel": "texts per second"},
    )
    return table.show()


def _head():
    """The same tuned head for every configuration: scaling, and C chosen by 5-fold CV on the training vectors."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 2, 6), cv=5, max_iter=3000))


def _accuracy_table(title, configs, make, train, y_train, test, y_test, draws, labels_per_draw, notes):
    """Accuracy of the tuned head on each configuration's vectors (all training items, and small draws)."""
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    rng = np.random.default_rng(0)
    draw_rows = []
    per_class = min(labels_per_draw // 2, *np.bincount(y_train))  # fewer in a --quick run
    labels_per_draw = 2 * per_class
    for _ in range(draws):  # the same draws for every configuration, stratified
        draw_rows.append(np.concatenate([rng.choice(np.flatnonzero(y_train == c), per_class, replace=False)
                                         for c in np.unique(y_train)]))
    vectors, results = {}, {}
    for name, (backend, precision) in configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoder = make(backend=backend, precision=precision).fit(train)  # calibrated on training items only
            vectors[name] = (encoder.transform(train), encoder.transform(test))
        full = _head().fit(vectors[name][0], y_train).score(vectors[name][1], y_test)
        few = [_head().fit(vectors[name][0][rows], y_train[rows]).score(vectors[name][1], y_test) for rows in draw_rows]
        results[name] = (full, float(np.mean(few)), float(np.std(few)))
    reference = next(iter(configs))
    rows = []
    for name, (full, few, spread) in results.items():
        cos = cosine_rows(vectors[name][1], vectors[reference][1])
        rows.append([name, f"{full:.4f}", f"{100 * (full - results[reference][0]):+.2f}", f"{few:.4f} ± {spread:.4f}",
                     f"{100 * (few - results[reference][1]):+.2f}", f"{cos.min():.6f}", f"{cos.mean():.6f}"])
    return Table(title, ["configuration", f"accuracy, all {len(train)} training items", "points vs fp32",
                         f"accuracy, {labels_per_draw} labels ({draws} draws)", "points vs fp32",
                         "min cosine to fp32 (test)", "mean cosine to fp32 (test)"], rows, notes=notes).show()


def accuracy(args) -> list:
    """What int8 and bf16 cost downstream: SST-2 sentiment and hymenoptera ants-vs-bees with a tuned head."""
    train, y_train = read_sst2(DATA_DIR / "sst2" / "stsa.binary.train")
    test, y_test = read_sst2(DATA_DIR / "sst2" / "stsa.binary.test")
    train, y_train = list(train)[: args.limit_accuracy], list(y_train)[: args.limit_accuracy]
    test, y_test = list(test)[: args.limit_accuracy], list(y_test)[: args.limit_accuracy]
    head = ("head: StandardScaler + LogisticRegressionCV (C from 1e-3 to 1e2, 5-fold CV on the training vectors "
            "only), the same for every configuration; int8 encoders are fitted (calibrated) on the training items.")
    text_configs = {"TextEncoder torch fp32": ("torch", "fp32"), "TextEncoder torch bf16": ("torch", "bf16"),
                    "TextEncoder onnx int8": ("onnx", "int8"), "TextEncoder openvino bf16": ("openvino", "bf16"),
                    "TextEncoder openvino int8": ("openvino", "int8")}
    texts = _accuracy_table(
        f"Backends, downstream: SST-2 sentiment, {len(train)} training / {len(test)} test sentences, all-MiniLM-L6-v2",
        text_configs, lambda **p: TextEncoder(device="cpu", **p), train, y_train, test, y_test, args.draws, 100,
        [head, "points: accuracy difference to torch fp32 in percentage points; 100 labels: 50 per class, "
               "the same draws for every configuration."])
    files = hymenoptera_files(args.data)
    split = [[f for f in files if f"/{part}/{cls}/" in f][: args.limit] for part in ("train", "val")
             for cls in ("ants", "bees")]
    split = split[0] + split[1], split[2] + split[3]  # --limit: that many per class
    label = [[int("/bees/" in f) for f in part] for part in split]
    image_configs = {"ImageEncoder torch fp32": ("torch", "fp32"), "ImageEncoder onnx int8": ("onnx", "int8"),
                     "ImageEncoder openvino bf16": ("openvino", "bf16"),
                     "ImageEncoder openvino int8": ("openvino", "int8")}
    images = _accuracy_table(
        f"Backends, downstream: hymenoptera ants vs bees, {len(split[0])} training / {len(split[1])} "
        "validation photos, MobileNetV2 IMAGENET1K_V1", image_configs,
        lambda **p: ImageEncoder("mobilenet_v2", weights="IMAGENET1K_V1", device="cpu", **p),
        split[0], label[0], split[1], label[1], args.draws, 20,
        [head, "20 labels: 10 per class, the same draws for every configuration."])
    return [texts, images]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with the hymenoptera images")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N image files for the timings "
                        "and N per class and split for the downstream accuracy (smoke test)")
    parser.add_argument("--limit-texts", type=int, default=1000, help="SST-2 sentences to encode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-accuracy", type=int, default=None, help="SST-2 sentences per split for the "
                        "downstream accuracy (default: all)")
    parser.add_argument("--draws", type=int, default=5, help="small-label draws for the downstream accuracy")
    args = parser.parse_args(argv)
    print(f"Machine: {machine_description()}")
    return [images(args), texts(args), *accuracy(args)]


if __name__ == "__main__":
    main()
