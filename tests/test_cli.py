"""The command line, driven through subprocess: files written, exit codes and messages.

Bad input must end with a non-zero status and one line on stderr, never a traceback.
"""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest



def sktransfer(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sktransfer", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def sktransfer_in_process(capsys, *args):
    """The same command through ``cli.main`` in this process: argument handling and error
    reporting without the seconds of a fresh interpreter (the subprocess tests cover the entry point)."""
    from sktransfer.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code or 0, captured.out, captured.err)


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sktransfer: error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def photo_folder(tmp_path, hymenoptera):
    """Three photos in nested folders, plus a file that is not an image."""
    root = tmp_path / "photos"
    (root / "ants").mkdir(parents=True)
    (root / "bees" / "deeper").mkdir(parents=True)
    shutil.copy(hymenoptera["train"]["ants"][0], root / "ants" / "a.jpg")
    shutil.copy(hymenoptera["train"]["bees"][0], root / "bees" / "b.jpg")
    shutil.copy(hymenoptera["train"]["bees"][1], root / "bees" / "deeper" / "c.JPG")
    (root / "notes.txt").write_text("not an image")
    return root


IMAGE_FLAGS = ["--weights", "IMAGENET1K_V1", "--device", "cpu", "--quiet"]


@pytest.mark.parametrize("command", [[], ["embed"], ["models"], ["demo"], ["cache"], ["cache", "info"],
                                     ["cache", "clear"], ["cache", "export"], ["cache", "import"]])
def test_help_is_complete(command, capsys):
    result = sktransfer_in_process(capsys, *command, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: sktransfer")
    if command == ["embed"]:
        for flag in ["--model", "--weights", "--layer", "--pooling", "--batch-size", "--precision", "--device",
                     "--cache", "--column", "--on-error", "--kind", "-o OUTPUT", "--scheduler ADDRESS"]:
            assert flag in result.stdout, flag


def test_embed_folder_recursively_with_cache(photo_folder, tmp_path):
    out, cache = tmp_path / "photos.npy", tmp_path / "cache"
    result = sktransfer("embed", str(photo_folder), "-o", str(out), "--cache", str(cache), *IMAGE_FLAGS)
    assert result.returncode == 0, result.stderr
    assert "wrote 3 x 1280 image features (mobilenet_v2)" in result.stdout and "3 encoded" in result.stdout
    features = np.load(out)
    assert features.shape == (3, 1280) and features.dtype == np.float32 and np.isfinite(features).all()
    items = (tmp_path / "photos.npy.items.txt").read_text().split()
    assert [p.rsplit("/", 1)[-1] for p in items] == ["a.jpg", "b.jpg", "c.JPG"]  # sorted, recursive
    again = sktransfer("embed", str(photo_folder), "-o", str(tmp_path / "again.npy"), "--cache", str(cache),
                       *IMAGE_FLAGS)
    assert "3 hits, 0 encoded" in again.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), features)


def test_embed_list_file_of_images_matches_the_estimator(photo_folder, tmp_path):
    from sktransfer import ImageEncoder

    paths = sorted(str(p) for p in photo_folder.rglob("*.[jJ]*"))
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(paths) + "\n")
    result = sktransfer("embed", str(listing), "-o", str(tmp_path / "f.npy"), "--no-cache", "--layer", "features.18",
                        "--pooling", "max", *IMAGE_FLAGS)
    assert result.returncode == 0, result.stderr
    expected = ImageEncoder(weights="IMAGENET1K_V1", layer="features.18", pooling="max", device="cpu").fit(paths)
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), expected.transform(paths), atol=1e-5)


def test_embed_csv_text_column_to_parquet(tmp_path):
    table = pd.DataFrame({"id": [1, 2, 3], "review": ["great film", "dull and slow", "great film"]})
    table.to_csv(tmp_path / "reviews.csv", index=False)
    out = tmp_path / "reviews.parquet"
    result = sktransfer("embed", str(tmp_path / "reviews.csv"), "--column", "review", "-o", str(out),
                        "--no-cache", "--precision", "bf16", "--batch-size", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "wrote 3 x 384 text features (all-MiniLM-L6-v2)" in result.stdout
    frame = pd.read_parquet(out)
    assert list(frame.columns[:2]) == ["item", "textencoder_000"] and frame.shape == (3, 385)
    assert frame["item"].tolist() == table["review"].tolist()
    np.testing.assert_array_equal(frame.iloc[0, 1:].to_numpy(), frame.iloc[2, 1:].to_numpy())


def test_embed_text_list_and_missing_values_policy(tmp_path, capsys):
    listing = tmp_path / "texts.txt"
    listing.write_text("first line of text\nsecond line\n")
    result = sktransfer("embed", str(listing), "-o", str(tmp_path / "t.npy"), "--no-cache", "--quiet")
    assert result.returncode == 0 and np.load(tmp_path / "t.npy").shape == (2, 384)

    pd.DataFrame({"text": ["fine", None]}).to_csv(tmp_path / "gaps.csv", index=False)
    refused = sktransfer_in_process(capsys, "embed", str(tmp_path / "gaps.csv"), "-o", str(tmp_path / "g.npy"),
                                    "--no-cache", "--quiet")
    assert_one_line_error(refused, 1, "index 1", "missing value")
    kept = sktransfer_in_process(capsys, "embed", str(tmp_path / "gaps.csv"), "-o", str(tmp_path / "g.npy"),
                                 "--no-cache", "--quiet", "--on-error", "nan")
    assert kept.returncode == 0 and "1 NaN rows" in kept.stdout
    assert "sktransfer: warning: TextEncoder returned NaN rows for 1 of 2 items" in kept.stderr
    assert np.isnan(np.load(tmp_path / "g.npy")[1]).all()


def test_unreadable_image_exits_naming_the_file_or_gives_nan_rows(photo_folder, tmp_path, capsys):
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    result = sktransfer("embed", str(photo_folder), "-o", str(tmp_path / "x.npy"), "--no-cache", *IMAGE_FLAGS)
    assert_one_line_error(result, 1, "broken.jpg")
    assert not (tmp_path / "x.npy").exists()
    result = sktransfer_in_process(capsys, "embed", str(photo_folder), "-o", str(tmp_path / "x.npy"), "--no-cache",
                                   "--on-error", "nan", *IMAGE_FLAGS)
    assert result.returncode == 0 and "1 NaN rows" in result.stdout
    assert "sktransfer: warning:" in result.stderr and "broken.jpg" in result.stderr


@pytest.mark.parametrize(
    "arguments, code, fragments",
    [
        (["missing-folder", "-o", "{tmp}/x.npy"], 2, ["input not found: missing-folder"]),
        (["{photos}", "-o", "{tmp}/x.csv"], 2, ["output must end in .npy or .parquet"]),
        (["{photos}", "-o", "{tmp}/nowhere/x.npy"], 2, ["output folder does not exist"]),
        (["{photos}", "-o", "{tmp}/x.npy", "--model", "resnet_9000", "--weights", "IMAGENET1K_V1"], 1,
         ["resnet_9000"]),
        (["{photos}", "-o", "{tmp}/x.npy", "--weights", "NO_SUCH_WEIGHTS"], 1, ["NO_SUCH_WEIGHTS"]),
        (["{photos}", "-o", "{tmp}/x.npy", "--weights", "IMAGENET1K_V2"], 1, ["IMAGENET1K_V2", "IMAGENET1K_V1"]),
        (["{texts}", "-o", "{tmp}/x.npy", "--model", "no-such-sentence-model"], 1, ["no-such-sentence-model"]),
        (["{texts}", "-o", "{tmp}/x.npy", "--weights", "IMAGENET1K_V1"], 2, ["--weights applies to images"]),
        (["{table}", "-o", "{tmp}/x.npy"], 2, ["choose one with --column"]),
        (["{table}", "-o", "{tmp}/x.npy", "--column", "nope"], 2, ["no column 'nope'"]),
        (["{imagelist}", "-o", "{tmp}/x.npy", "--weights", "IMAGENET1K_V1"], 1, ["index 1", "gone.jpg"]),
    ],
    ids=["missing-input", "bad-output", "missing-output-folder", "unknown-model", "unknown-weights",
         "weights-not-offline", "unknown-text-model", "image-flag-on-text", "ambiguous-table", "unknown-column", "missing-listed-image"],
)
def test_bad_input_gives_one_line_and_non_zero_exit(photo_folder, tmp_path, arguments, code, fragments, capsys):
    (tmp_path / "texts.txt").write_text("hello\n")
    pd.DataFrame({"a": ["x"], "b": ["y"]}).to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "images.txt").write_text(f"{photo_folder / 'ants' / 'a.jpg'}\n{tmp_path / 'gone.jpg'}\n")
    values = dict(tmp=tmp_path, photos=photo_folder, texts=tmp_path / "texts.txt", table=tmp_path / "table.csv",
                  imagelist=tmp_path / "images.txt")
    result = sktransfer_in_process(capsys, "embed", *[a.format(**values) for a in arguments], "--no-cache", "--quiet")
    assert_one_line_error(result, code, *fragments)


def test_models_lists_what_resolves_offline():
    result = sktransfer("models")
    assert result.returncode == 0, result.stderr
    assert "all-MiniLM-L6-v2" in result.stdout
    assert "mobilenet_v2" in result.stdout and "IMAGENET1K_V1" in result.stdout


def test_demo_runs_the_three_examples(data_dir, tmp_path):
    # --quick: tiny subsets of the same three scripts the README's main job runs in full.
    result = sktransfer("demo", "--quick", "--data", str(data_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for expected in ["TextEncoder + LR", "TF-IDF + LR", "(zero-shot)", "ImageEncoder(mobilenet_v2, IMAGENET1K_V1) + LogReg",
                     "ImageEncoder(timm:tf_efficientnet_lite0) + LogReg", "raw pixels", "tabular only", "tabular + photo", "tabular + photo + name"]:
        assert expected in result.stdout, expected
    assert (tmp_path / "output" / "sst2_learning_curve.png").stat().st_size > 10_000


def test_demo_reports_missing_examples(tmp_path):
    assert_one_line_error(sktransfer("demo", "--examples", str(tmp_path)), 1, "example scripts are not in")
