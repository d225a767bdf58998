"""The example and benchmark scripts run end to end on tiny inputs, so they cannot rot.

These are smoke tests: they check that each script runs, prints its table and writes its
outputs. They never assert on timings.
"""

import subprocess
import sys


from conftest import REPO_ROOT


def run(script, *args, cwd=None):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_sst2_learning_curve_example(data_dir, tmp_path):
    out = run(
        "examples/sst2_learning_curve.py", "--data", str(data_dir / "sst2"), "--limit", "60",
        "--sizes", "20", "1000", "--draws", "2", "--output", str(tmp_path / "curve.png"),
    )
    assert "TextEncoder + LR" in out and "TF-IDF + LR" in out
    assert (tmp_path / "curve.png").stat().st_size > 10_000


def test_sst2_example_reports_missing_data(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples/sst2_learning_curve.py"), "--data", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "SST-2 not found" in result.stderr


def test_hymenoptera_example(data_dir):
    out = run("examples/hymenoptera_transfer.py", "--data", str(data_dir / "hymenoptera"), "--limit", "6", "--cv", "2")
    assert "ImageEncoder(mobilenet_v2, IMAGENET1K_V1) + LogReg" in out and "raw pixels" in out


def test_image_benchmark_smoke(data_dir):
    out = run("benchmarks/bench_images.py", "--limit", "4", "--repeats", "1")
    assert "vs baseline" in out and "Machine:" in out


def test_cache_benchmark_smoke(data_dir):
    out = run("benchmarks/bench_cache.py", "--n-texts", "30", "--n-images", "10", "--n-hit", "200", "--repeats", "1")
    assert out.count("cached pipeline") == 4 and "Full hit" in out and "texts/s" in out


def test_text_benchmark_smoke(data_dir):
    out = run("benchmarks/bench_text.py", "--limit", "40", "--repeats", "1")
    assert "SentenceTransformer.encode fp32 (baseline)" in out and "% of matmul peak" in out


def test_scaling_benchmark_smoke(data_dir):
    out = run("benchmarks/bench_scaling.py", "--image-factors", "1", "--text-sizes", "64")
    assert "hymenoptera files x 1" in out and "SST-2 sentences, 64 distinct" in out and "MiB" in out
