"""Encoding on Dask, Ray and Spark local clusters against the single-process encoder (the baseline).

The same fitted encoder (no cache, so every item is encoded every time) encodes the same SST-2
sentences and hymenoptera photos: in this process (``encoder.transform``, torch's default
threads), through ``sktransfer.dask.transform`` on a LocalCluster of 1 and of 2 worker processes
(one thread each), and through ``sktransfer.ray.transform`` with 1 and 2 actors on
``ray.init(num_cpus=3)`` (3 logical CPUs on the 2 cores: each actor holds one, and the stage
that feeds them needs another), and through ``sktransfer.spark.transform`` on a ``local[2]`` Spark
session (2 task slots, one Python worker each; the rows collected and put back in input order on
the driver, as a user would). Repetitions alternate between the configurations; the figures are
steady-state throughput (models already loaded on the workers) and, separately, the start-up
costs: starting each cluster, and the first run, which ships the encoder and loads the model in
every worker; and the resident memory of a Dask worker, idle and with each model loaded. On a 2-core machine expect no gain: the point is the overhead.

Usage: python benchmarks/bench_cluster.py [--texts 1000] [--photos 160] [--repeats 3] [--workers 1 2] [--no-ray]
       [--no-spark]
Writes docs/benchmarks_cluster.json (the run the "Scaling out" page quotes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_DIR, hymenoptera_files, machine_description, read_sst2, summary  # noqa: E402

from sktransfer import ImageEncoder, TextEncoder  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks_cluster.json"


def resident_mib():
    """Resident memory of this process in MiB (run on each Dask worker by ``Client.run``)."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def timed(run):
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000, help="SST-2 training sentences")
    parser.add_argument("--photos", type=int, default=160, help="hymenoptera photos")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="Dask cluster sizes; worker memory is read on the last (default: 1 2)")
    parser.add_argument("--no-ray", action="store_true", help="no Ray rows")
    parser.add_argument("--no-spark", action="store_true", help="no Spark rows")
    parser.add_argument("--output", default=str(OUT), help="JSON results file (default: %(default)s)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import sktransfer.dask

    texts = read_sst2(DATA_DIR / "sst2" / "stsa.binary.train")[0][: args.texts]
    photos = hymenoptera_files()[: args.photos]
    workloads = {
        "texts": (TextEncoder(device="cpu").fit(texts[:1]), texts),
        "photos": (ImageEncoder(weights="IMAGENET1K_V1", device="cpu").fit(photos[:1]), photos),
    }
    for encoder, items in workloads.values():
        encoder.transform(items[:8])  # baseline warm-up outside the timing

    startup, runners, clients = {}, {}, []
    for n_workers in args.workers:
        name = f"dask, {n_workers} worker(s)"
        seconds, cluster = timed(lambda n=n_workers: LocalCluster(n_workers=n, threads_per_worker=1,
                                                                  processes=True, dashboard_address=None))
        client = Client(cluster, set_as_default=False)
        clients.append((client, cluster))
        startup[name] = {"start_s": seconds}

        def run_dask(encoder, items, client=client, n=n_workers):
            frame = dd.from_pandas(pd.DataFrame({"item": items}), npartitions=4 * n)
            with client.as_current():
                return client.compute(sktransfer.dask.transform(encoder, frame, column="item")).result().to_numpy()

        runners[name] = run_dask

    ray = None
    if not args.no_ray:
        import ray
        import ray.data

        import sktransfer.ray

        # 3 logical CPUs on the 2 cores: 2 actors plus the stage that feeds them (2 would hang).
        seconds, _ = timed(lambda: ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False))
        startup["ray"] = {"start_s": seconds}
        ray.data.DataContext.get_current().enable_progress_bars = False
        for n_actors in (1, 2):
            def run_ray(encoder, items, n=n_actors):
                dataset = ray.data.from_pandas(pd.DataFrame({"item": items}))
                out = sktransfer.ray.transform(encoder, dataset, column="item", batch_size=64, concurrency=n)
                return np.stack(out.to_pandas()["embedding"].to_numpy())

            runners[f"ray, {n_actors} actor(s)"] = run_ray

    session = None
    if not args.no_spark:
        from pyspark.sql import SparkSession

        import sktransfer.spark

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers run this interpreter
        seconds, session = timed(lambda: SparkSession.builder.master("local[2]").appName("bench_cluster")
                                 .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                                 .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
        session.sparkContext.setLogLevel("ERROR")
        startup["spark, local[2]"] = {"start_s": seconds}

        def run_spark(encoder, items):
            frame = session.createDataFrame(pd.DataFrame({"row": np.arange(len(items)), "item": items}))
            rows = sktransfer.spark.transform(encoder, frame.repartition(8), "item", batch_size=64).select(
                "row", "embedding").collect()
            features = np.empty((len(items), encoder.embedding_dim_), dtype=np.float32)
            features[[row["row"] for row in rows]] = [row["embedding"] for row in rows]
            return features

        runners["spark, local[2]"] = run_spark

    baseline = {kind: encoder.transform(items) for kind, (encoder, items) in workloads.items()}
    memory_name, memory_client = f"dask, {args.workers[-1]} worker(s)", clients[-1][0]
    memory = {"idle worker": list(memory_client.run(resident_mib).values())}
    first_run = {}
    for name, run in runners.items():  # first run: ships the encoder and loads the model everywhere
        first_run[name] = {}
        for kind, (encoder, items) in workloads.items():
            seconds, features = timed(lambda r=run, e=encoder, i=items: r(e, i))
            first_run[name][kind] = seconds
            assert np.abs(features - baseline[kind]).max() < 1e-5, (name, kind)
            if name == memory_name:  # resident memory once this model is loaded (and the ones before)
                memory[f"after {kind}"] = list(memory_client.run(resident_mib).values())

    times = {kind: {name: [] for name in ["single process", *runners]} for kind in workloads}
    for _ in range(args.repeats):  # alternating: every configuration once per repetition
        for kind, (encoder, items) in workloads.items():
            times[kind]["single process"].append(timed(lambda e=encoder, i=items: e.transform(i))[0])
            for name, run in runners.items():
                times[kind][name].append(timed(lambda r=run, e=encoder, i=items: r(e, i))[0])

    machine = machine_description()
    print(f"Machine: {machine}")
    results = {"date": datetime.date.today().isoformat(), "machine": machine, "repeats": args.repeats,
               "items": {kind: len(items) for kind, (_, items) in workloads.items()},
               "startup": startup, "first_run_s": first_run, "seconds": times, "worker_rss_mib": memory}
    for kind, rows in times.items():
        n = len(workloads[kind][1])
        base = np.median(rows["single process"])
        print(f"\n{kind}: {n} items, {args.repeats} alternating repetitions (steady state)")
        for name, seconds in rows.items():
            rate = n / np.median(seconds)
            print(f"  {name:<22} {summary(seconds):>16}  {rate:8.1f} items/s  {base / np.median(seconds):5.2f}x "
                  "the single process")
    print("\nstart-up")
    for name, values in startup.items():
        print(f"  {name:<22} cluster start {values['start_s']:.1f} s")
    for name, values in first_run.items():
        print(f"  {name:<22} first run " + ", ".join(f"{k} {v:.1f} s" for k, v in values.items()))
    print(f"resident memory of each of the {args.workers[-1]} Dask workers: " + "; ".join(
        f"{stage} {', '.join(f'{v:.0f}' for v in values)} MiB" for stage, values in memory.items()))
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.output}")
    for client, cluster in clients:
        client.close()
        cluster.close()
    if ray is not None:
        ray.shutdown()
    if session is not None:
        session.stop()


if __name__ == "__main__":
    main()
