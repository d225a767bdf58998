"""The speed advisor (`sktransfer.speed.speed`, ``sktransfer speed``) and the slow-bf16 warning.

On a tiny input: every configuration measured in one process, the table's figures consistent with
one another, the recommendation's line of Python building the encoder it measured.
"""

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from sktransfer import ImageEncoder, TextEncoder, _device, cli
from sktransfer.speed import SpeedReport, machine_description, speed

needs_onnx = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                reason="the onnx extra is not installed: pip install 'sktransfer[onnx]'")


@pytest.fixture(scope="module")
def report(sst2_sample):
    return speed(sst2_sample[0][:24], configurations=[("torch", "fp32"), ("torch", "bf16"), ("onnx", "int8")],
                 repeats=2, show_progress=False, batch_size=8)


@needs_onnx
def test_the_report_measures_each_configuration_against_torch_fp32(report):
    assert report.kind == "text" and report.n_items == 24 and report.repeats == 2
    names = [row["configuration"] for row in report.rows]
    assert names == ["torch fp32", "torch bf16", "onnx int8"]
    reference = report.rows[0]
    assert reference["ratio"] == 1.0 and reference["min_cosine"] == pytest.approx(1.0, abs=1e-6)
    for row in report.rows:
        assert len(row["seconds"]) in (1, 2) and row["items_per_second"] > 0
        assert row["items_per_second"] == pytest.approx(24 / np.median(row["seconds"]), rel=1e-3)
        assert row["ratio"] == pytest.approx(row["items_per_second"] / reference["items_per_second"], rel=1e-2)
        assert 0.5 < row["min_cosine"] <= row["mean_cosine"] <= 1.0 + 1e-6
    assert report.rows[2]["fidelity_at_fit"]["n_items"] == 24
    assert "CPU capability" in report.machine and "bf16 instructions" in report.machine


@needs_onnx
def test_the_recommendation_is_the_fastest_faithful_row_and_its_line_builds_it(report):
    for level, row in report.recommended.items():
        faithful = [r for r in report.rows if r["mean_cosine"] >= level]
        assert row is max(faithful, key=lambda r: r["items_per_second"])
        line = report.python(row)
        built = eval(line, {"TextEncoder": TextEncoder})  # noqa: S307 - our own line
        assert built.backend == row["backend"] and built.precision == row["precision"]
    shown = str(report)
    assert "fastest at mean cosine >= 0.99:" in shown and "fastest at mean cosine >= 0.999:" in shown
    assert "TextEncoder('all-MiniLM-L6-v2'" in shown
    json.dumps(report.to_dict())  # serialisable as it is


def test_a_configuration_slower_than_the_cutoff_is_timed_once(sst2_sample, monkeypatch):
    from sktransfer import speed as module

    monkeypatch.setattr(module, "SLOW_CUTOFF", 1e-9)  # every configuration is "slower" than the reference
    report = speed(sst2_sample[0][:8], configurations=["torch fp32, n_streams=1"], repeats=3, show_progress=False)
    reference, other = report.rows
    assert len(reference["seconds"]) == 3 and len(other["seconds"]) == 1
    assert "not timed again" in other["note"] and other["items_per_second"] > 0
    with pytest.raises(ValueError, match="speed sets backend itself"):
        speed(sst2_sample[0][:8], backend="onnx")


def test_the_recommendation_is_the_fastest_row_at_each_level_and_skips_unfaithful_ones():
    def row(name, speed, cosine):
        backend, precision = name.split()
        return {"items_per_second": speed, "mean_cosine": cosine, "configuration": name, "backend": backend,
                "precision": precision, "params": {}, "ratio": speed and speed / 10.0}

    rows = [row("torch fp32", 10.0, 1.0), row("torch bf16", 14.0, 0.9995), row("onnx int8", 30.0, 0.98),
            row("openvino int8", 20.0, 0.995)]
    rows.append({**row("openvino bf16", None, float("nan")), "note": "failed"})
    report = SpeedReport("text", "m", 4, 3, machine_description(), rows, [], {})
    assert report.recommended[0.99]["configuration"] == "openvino int8"  # onnx int8 is faster, not faithful
    assert report.recommended[0.999]["configuration"] == "torch bf16"
    assert report.python(rows[1]) == "TextEncoder('m', precision='bf16')"
    assert json.loads(json.dumps(report.to_dict()))["rows"][-1]["mean_cosine"] is None  # NaN as null


@needs_onnx
def test_the_command_prints_the_table_and_writes_json(tmp_path, capsys, hymenoptera):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in map(Path, hymenoptera["val"]["ants"][:3]):
        (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "speed.json"
    code = cli.main(["speed", str(folder), "--weights", "IMAGENET1K_V1", "--repeats", "1", "--batch-size", "2",
                     "--only", "onnx int8", "--only", "torch bf16", "--json", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "3 images, mobilenet_v2" in printed and "onnx int8" in printed
    assert "ImageEncoder('mobilenet_v2', batch_size=2, weights='IMAGENET1K_V1'" in printed
    found = json.loads(out.read_text())
    assert found["kind"] == "image"
    assert [r["configuration"] for r in found["rows"]] == ["torch fp32", "torch bf16", "onnx int8"]
    # Usage errors exit 2 with one line: a text flag on photos, a configuration this machine has not.
    assert cli.main(["speed", str(folder), "--kind", "text", "--weights", "X"]) == 2
    assert cli.main(["speed", str(folder), "--only", "onnx int4", "--quiet"]) == 2
    assert "is not a configuration this machine can run" in capsys.readouterr().err


def test_bf16_on_a_cpu_without_bf16_instructions_warns_at_fit(monkeypatch, sst2_sample):
    monkeypatch.setattr(_device, "native_bf16", lambda: False)
    with pytest.warns(UserWarning, match=r"no bf16 instructions .* 7x \(TextEncoder\) to 12x"):
        TextEncoder(device="cpu", precision="bf16").fit(sst2_sample[0][:2])
    monkeypatch.setattr(_device, "native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TextEncoder(device="cpu", precision="bf16").fit(sst2_sample[0][:2])
        ImageEncoder(weights="IMAGENET1K_V1", device="cpu").fit(["unused.jpg"])  # fp32: never
