"""The benchmark scripts run end to end on tiny inputs, so they cannot rot.

The examples run end to end through ``sktransfer demo --quick`` in ``test_cli.py``, each in its
own process as a user runs it; here a script's ``main(argv)`` runs in this process where a
process of its own would prove nothing more (models the suite has loaded are reused). The
benchmark suite keeps its own process: its scripts time, thread and fork as on a real run.

These are smoke tests: they check that each script runs, prints its table and writes its
outputs. They never assert on timings.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import REPO_ROOT


def run(script, *args, cwd=None):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def run_in_process(script, *args, capsys, status=0):
    """Run a script's ``main(argv)`` in this process; check what it returns and give (stdout, stderr)."""
    path = REPO_ROOT / script
    spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    assert module.main(list(args)) == status
    return capsys.readouterr()


def test_sst2_example_reports_missing_data(tmp_path, capsys):
    err = run_in_process("examples/sst2_learning_curve.py", "--data", str(tmp_path), capsys=capsys, status=2).err
    assert "SST-2 not found" in err


def test_fashion_example_reports_missing_data(tmp_path, capsys):
    err = run_in_process("examples/fashion_products.py", "--data", str(tmp_path), capsys=capsys, status=2).err
    assert "fashion_products not found" in err


def test_benchmark_suite_smoke(data_dir, tmp_path):
    # Every benchmark script, through the orchestrator that writes the docs page and its charts.
    page = tmp_path / "benchmarks.md"
    out = run("benchmarks/run_all.py", "--quick", "--output", str(page))
    for expected in ["SentenceTransformer.encode fp32 (baseline)", "% of matmul peak", "tutorial loop (baseline)",
                     "cached pipeline", "Full hit", "hymenoptera files x 1", "SST-2 sentences, 64 distinct",
                     "inside transform with n_threads=1", "inside a streamed TextEncoder transform",
                     "TextEncoder bf16, one stream", "TextEncoder bf16 (default)", "Machine:",
                     "stdlib docstring paragraphs", "whole network + augmentation (baseline)",
                     "Backends, images", "network only: openvino fp32", "ONNX Runtime by hand, fp32"]:
        assert expected in out, expected
    text = page.read_text()
    assert text.startswith("# Benchmarks") and "cores, torch" in text
    assert "figures mean nothing" in text  # a quick run labels itself
    charts = sorted(p.name for p in (tmp_path / "img").glob("*.png"))
    assert charts == ["bench_backends_0.png", "bench_backends_1.png", "bench_cache_0.png", "bench_cache_1.png", "bench_finetune_0.png", "bench_images_0.png",
                      "bench_scaling_0.png",
                      "bench_text-long_0.png", "bench_text_0.png"]
    for name in charts:
        assert f"img/{name}" in text and (tmp_path / "img" / name).stat().st_size > 10_000


def test_precision_benchmark_smoke(data_dir, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))  # the script's own imports; undone after
    out = run_in_process("benchmarks/bench_precision_cpu.py", "--limit", "20", "--repeats", "1", capsys=capsys,
                         status=None).out
    assert "bf16 flags:" in out and "fp32 (baseline)" in out and "x the fp32 time" in out


def test_cluster_benchmark_smoke(data_dir, tmp_path, capsys, monkeypatch):

    import pytest

    pytest.importorskip("distributed", reason="the dask extra is not installed: pip install 'sktransfer[dask]'")
    # Dask and Spark, no Ray: every Ray execution restarts its actors (about 10 s each here), and the
    # Ray calls the benchmark makes are those of tests/test_cluster.py. One Dask cluster size: the
    # loop over sizes is the same for each.
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # what the benchmark sets, undone after
    out = run_in_process("benchmarks/bench_cluster.py", "--texts", "16", "--photos", "4", "--repeats", "1",
                         "--workers", "2", "--no-ray", "--output", str(tmp_path / "cluster.json"), capsys=capsys,
                         status=None).out
    assert "dask, 2 worker(s)" in out and "spark, local[2]" in out and "ray" not in out
    assert "x the single process" in out
    results = json.loads((tmp_path / "cluster.json").read_text())
    assert set(results["seconds"]) == {"texts", "photos"} and len(results["worker_rss_mib"]["after photos"]) == 2


def test_adapting_examples_smoke(data_dir, tmp_path, capsys):
    # The fine-tuning and domain-shift examples of docs/adapting.md, on a handful of items. The
    # top layer only: the defaults tune all of MiniLM (the README and docs/adapting.md run them),
    # which costs about a minute here for a dozen sentences and checks nothing more of the script.
    out = run_in_process("examples/finetune_sst2.py", "--sizes", "12", "--draws", "1", "--test-size", "10",
                         "--unfreeze", "1", "--output", str(tmp_path / "sst2.json"), "--plot", str(tmp_path / "sst2.png"),
                         capsys=capsys).out
    assert "defaults" in out and (tmp_path / "sst2.png").stat().st_size > 10_000
    replayed = run_in_process("examples/finetune_sst2.py", "--replay", "--output", str(tmp_path / "sst2.json"),
                              "--plot", str(tmp_path / "sst2.png"), capsys=capsys).out
    assert "not-worse" in replayed and json.loads((tmp_path / "sst2.json").read_text())["dev_rules"]["never"]["fits"] == 1
    # Another size, the recipe alone only, added to the runs already written
    run_in_process("examples/finetune_sst2.py", "--sizes", "14", "--draws", "1", "--test-size", "10", "--unfreeze", "1",
                   "--default-sizes", "--add", "--output", str(tmp_path / "sst2.json"), "--plot",
                   str(tmp_path / "sst2.png"), capsys=capsys)
    merged = json.loads((tmp_path / "sst2.json").read_text())
    assert [r["n"] for r in merged["runs"]] == [12, 14] and len(merged["commands"]) == 2
    only_alone = merged["summary"][1]
    assert only_alone["n"] == 14 and "alone_mean" in only_alone and "tuned_mean" not in only_alone
    assert merged["dev_rules"]["never"]["fits"] == 1  # rules are replayed where the defaults were fitted
    assert merged["summary"][0]["dev_rules"]["always"]["fits"] == 1 and "dev_rules" not in only_alone  # per size
    assert len(merged["summary"][0]["unless_worse_on_test"]["per_draw"]) == 1
    run_in_process("examples/finetune_sst2.py", "--replay", "--output", str(tmp_path / "sst2.json"),  # and again
                   "--plot", str(tmp_path / "sst2.png"), capsys=capsys)
    out = run_in_process("examples/finetune_hymenoptera.py", "--tasks", "hymenoptera", "hymenoptera-10", "--limit", "3",
                         "--seeds", "1", "--whole-network", "--full-epochs", "1", "--output", str(tmp_path / "hym.json"),
                         capsys=capsys).out
    assert "whole network" in out and "frozen+tuned head" in out
    assert {r["task"] for r in json.loads((tmp_path / "hym.json").read_text())["runs"]} == {"hymenoptera",
                                                                                            "hymenoptera-10"}
    table = run_in_process("examples/finetune_hymenoptera.py", "--table", "--output", str(tmp_path / "hym.json"),
                           capsys=capsys).out.strip().splitlines()
    assert len(table) == 2 + 4 and table[2].startswith("| hymenoptera, 6 training photos")  # a row per task, method
    out = run_in_process("examples/domain_shift_fashion.py", "--limit", "20", "--output", str(tmp_path / "shift.json"),
                         capsys=capsys).out
    assert "CORAL (StandardScaler, CORALAdapter)" in out
    out = run_in_process("examples/fewshot_sst2.py", "--sizes", "8", "--draws", "2", "--split", "dev", "--eval-size",
                         "40", "--output", str(tmp_path / "fewshot.json"), capsys=capsys).out
    assert "FewShotClassifier" in out and json.loads((tmp_path / "fewshot.json").read_text())["n_eval"] == 40


def test_fashion_few_shot_photo_task_is_ten_per_class_and_held_out(data_dir):
    spec = importlib.util.spec_from_file_location("finetune_hymenoptera", REPO_ROOT / "examples/finetune_hymenoptera.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    X, y, X_test, y_test = example.task("fashion-10", data_dir, seed=0, limit=None)
    classes, counts = np.unique(y, return_counts=True)
    assert len(classes) == 23 and set(counts) == {10} and set(np.unique(y_test, return_counts=True)[1]) == {30}
    assert not set(X) & set(X_test) and all(Path(p).is_file() for p in X[:3])
    again = example.task("fashion-10", data_dir, seed=0, limit=None)
    assert again[0] == X and example.task("fashion-10", data_dir, seed=1, limit=None)[0] != X  # a draw per seed


def test_text_recipe_benchmark_smoke(data_dir, tmp_path, capsys):
    # The benchmark that chose the text recipe, on 8 sentences, its cheapest recipe, 10 dev sentences.
    out = run_in_process("benchmarks/bench_text_recipe.py", "--n", "8", "--draws", "1", "--recipes",
                         "classification-all-8ep", "--dev-size", "10", "--output", str(tmp_path / "r.json"),
                         capsys=capsys).out
    assert "classification-all-8ep" in out and json.loads((tmp_path / "r.json").read_text())["rows"][0]["n"] == 8


def test_learning_curve_plot_names_the_test_set_it_used_and_its_legend_covers_no_point():
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("sst2_learning_curve", REPO_ROOT / "examples/sst2_learning_curve.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = [(20, {"frozen + tuned head": np.array([0.5, 0.6]), "TF-IDF + tuned LR": np.array([0.5, 0.52]),
                  "few-shot": np.array([0.7, 0.71]), "fine-tuned": np.array([0.62])}),
            (40, {"frozen + tuned head": np.array([0.9, 0.95]), "TF-IDF + tuned LR": np.array([0.55, 0.6]),
                  "few-shot": np.array([0.9, 0.91]), "fine-tuned": np.array([])})]
    fig = example.figure(rows, "all-MiniLM-L6-v2", n_test=60, zero_shot=0.98)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "SST-2 test accuracy (60 sentences)"  # the quick demo's 60, not 1821
    fig.canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert not legend.overlaps(axes_box)  # below the axes: no point (even at 0.98) can sit under it
    shown = [text.get_text() for text in ax.get_legend().get_texts()]
    assert shown[:4] == ["TextEncoder(all-MiniLM-L6-v2) + tuned head (frozen)",
                         "TF-IDF (1-2 grams) + tuned LogisticRegression", "FewShotClassifier (label names + labels)",
                         "FineTuningClassifier (defaults)"]  # a fine-tuned point at 20 only: still in the legend


def test_image_neighbours_example_smoke(data_dir, tmp_path, capsys):
    # The figure of docs/image_encoder.md ("What the encoder sees"), on three photos per class.
    out = run_in_process("examples/image_neighbours.py", "--limit", "3", "--queries", "2", "--neighbours", "2",
                         "--data", str(data_dir / "hymenoptera" / "val"), "--output", str(tmp_path / "n.jpg"),
                         capsys=capsys).out
    assert "6 photos; " in out and " of the 4 neighbours shown share" in out
    assert (tmp_path / "n.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG


def test_adapting_page_shows_the_published_sst2_learning_curve(capsys):
    # docs/adapting.md's learning-curve table is the one the example prints from docs/finetune_sst2.json,
    # so the page cannot drift from the measured figures
    table = run_in_process("examples/finetune_sst2.py", "--table", capsys=capsys).out.strip()
    assert table.count("\n") >= 3  # the header, the rule and a row per size
    assert table in (REPO_ROOT / "docs" / "adapting.md").read_text()


def test_sst2_add_refuses_runs_measured_differently_before_fitting(tmp_path, capsys):
    # --add merges only runs of the same CPU class and test set, and says so before any fit
    import torch

    output = tmp_path / "sst2.json"
    here = torch.backends.cpu.get_cpu_capability()
    for earlier, named in [({"cpu_capability": "another class"}, "cpu_capability"),
                           ({"cpu_capability": here, "test_size": 10}, "test_size")]:
        output.write_text(json.dumps(earlier))
        err = run_in_process("examples/finetune_sst2.py", "--sizes", "12", "--add", "--output", str(output),
                             "--data", str(tmp_path), capsys=capsys, status=2).err
        assert "--add" in err and named in err and "another --output" in err
    output.write_text(json.dumps({"cpu_capability": here}))  # the same: on to the data, missing here
    err = run_in_process("examples/finetune_sst2.py", "--sizes", "12", "--add", "--output", str(output),
                         "--data", str(tmp_path), capsys=capsys, status=2).err
    assert "SST-2 not found" in err


def test_adapting_page_shows_the_published_photo_figures(capsys):
    # The same for the photo tasks and docs/finetune_hymenoptera.json
    table = run_in_process("examples/finetune_hymenoptera.py", "--table", capsys=capsys).out.strip()
    assert table.count("\n") >= 4  # the header, the rule and a row per task
    assert table in (REPO_ROOT / "docs" / "adapting.md").read_text()
