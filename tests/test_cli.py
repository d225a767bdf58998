"""The command line, driven through subprocess: files written, exit codes and messages.

Bad input must end with a non-zero status and one line on stderr, never a traceback.
"""

import errno
import io
import shutil
import subprocess
import sys
from pathlib import Path

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
                     "--cache DIR", "--column", "--on-error", "--kind", "-o OUTPUT", "--scheduler ADDRESS",
                     "--overwrite", "--keep COLS"]:
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
    # Float noise only: another process (thread count, kernel choice) sums the convolutions in
    # another order; unnormalised max-pooled activations up to about 6 differ by about 1e-5 relative.
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), expected.transform(paths), rtol=1e-4, atol=1e-5)


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


def test_a_float_image_outside_its_range_names_the_value_range_flag(tmp_path, capsys):
    # The advice is built while the command runs (in flag style), wherever the image is decoded.
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.linspace(0, 200, 400, dtype=np.float32).reshape(20, 20), mode="F").save(photos / "f.tif")
    result = sktransfer_in_process(capsys, "embed", str(photos), "-o", str(tmp_path / "x.npy"), "--no-cache",
                                   *IMAGE_FLAGS)
    assert_one_line_error(result, 1, "f.tif", "pass --value-range 0,255", "--on-error nan")
    assert "value_range" not in result.stderr and "on_error" not in result.stderr


@pytest.mark.parametrize(
    "arguments, code, fragments",
    [
        (["missing-folder", "-o", "{tmp}/x.npy"], 2, ["input not found: missing-folder"]),
        (["{photos}", "-o", "{tmp}/x.csv"], 2, ["output must end in .npy or .parquet"]),
        (["{photos}", "-o", "{tmp}/nowhere/x.npy"], 2, ["output folder does not exist"]),
        (["{photos}", "-o", "{tmp}/x.npy", "--model", "resnet_9000", "--weights", "IMAGENET1K_V1"], 1,
         ["resnet_9000"]),
        (["{photos}", "-o", "{tmp}/x.npy", "--weights", "NO_SUCH_WEIGHTS"], 1, ["NO_SUCH_WEIGHTS"]),
        (["{photos}", "-o", "{tmp}/x.npy", "--weights", "IMAGENET1K_V2"], 1,
         ["IMAGENET1K_V2", "pass --weights IMAGENET1K_V1", "sktransfer models"]),
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
    for expected in ["frozen + tuned head", "TF-IDF + tuned LR", "few-shot", "fine-tuned", "zero-shot", "ImageEncoder(mobilenet_v2, IMAGENET1K_V1) + LogReg",
                     "ImageEncoder(timm:tf_efficientnet_lite0) + LogReg", "raw pixels", "tabular only", "tabular + photo", "tabular + photo + name"]:
        assert expected in result.stdout, expected
    assert (tmp_path / "output" / "sst2_learning_curve.png").stat().st_size > 10_000


def test_demo_reports_missing_examples(tmp_path):
    assert_one_line_error(sktransfer("demo", "--examples", str(tmp_path)), 1, "example scripts are not in")


# ------------------------------------------------------------------ outputs: never clobbered, never torn
def test_an_existing_output_is_refused_without_overwrite(photo_folder, tmp_path, capsys):
    (tmp_path / "texts.txt").write_text("first text\nsecond text\n")
    for name in ["t.npy", "t.parquet"]:
        (tmp_path / name).write_bytes(b"earlier results")
        result = sktransfer_in_process(capsys, "embed", str(tmp_path / "texts.txt"), "-o", str(tmp_path / name),
                                       "--no-cache", "--quiet")
        assert_one_line_error(result, 2, f"{tmp_path / name} exists", "--overwrite")
        assert (tmp_path / name).read_bytes() == b"earlier results"
    # A folder's .npy comes with its list of paths: an existing list is refused as well.
    (tmp_path / "p.npy.items.txt").write_text("earlier paths\n")
    result = sktransfer_in_process(capsys, "embed", str(photo_folder), "-o", str(tmp_path / "p.npy"),
                                   "--no-cache", *IMAGE_FLAGS)
    assert_one_line_error(result, 2, f"{tmp_path / 'p.npy.items.txt'} exists", "--overwrite")
    assert not (tmp_path / "p.npy").exists() and (tmp_path / "p.npy.items.txt").read_text() == "earlier paths\n"


def test_overwrite_replaces_the_output(tmp_path, capsys):
    (tmp_path / "texts.txt").write_text("first text\nsecond text\n")
    out = tmp_path / "t.npy"
    out.write_bytes(b"earlier results")
    (tmp_path / "t.npy.items.txt").write_text("rows of the earlier output\n")  # from an earlier folder run
    result = sktransfer_in_process(capsys, "embed", str(tmp_path / "texts.txt"), "-o", str(out), "--no-cache",
                                   "--quiet", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert np.load(out).shape == (2, 384)
    assert not (tmp_path / "t.npy.items.txt").exists()  # it described the rows just replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npy", "texts.txt"]  # no temporary file left


def _disk_full(real_bytes):
    """A writer that writes part of the data, then fails as a full disk does."""
    def write(target, *args, **kwargs):
        data = real_bytes(*args, **kwargs)
        if hasattr(target, "write"):
            target.write(data[: len(data) // 6])
        else:
            with open(target, "wb") as handle:
                handle.write(data[: len(data) // 6])
        raise OSError(errno.ENOSPC, f"No space left on device: {len(data)} requested and {len(data) // 6} written")
    return write


def _npy_bytes(array, *args, **kwargs):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array))
    return buffer.getvalue()


@pytest.mark.parametrize("output", ["t.npy", "t.parquet"])
def test_a_failed_write_leaves_the_earlier_output_untouched(output, tmp_path, capsys, monkeypatch):
    (tmp_path / "texts.txt").write_text("first text\nsecond text\n")
    out = tmp_path / output
    first = sktransfer_in_process(capsys, "embed", str(tmp_path / "texts.txt"), "-o", str(out), "--no-cache",
                                  "--quiet")
    assert first.returncode == 0, first.stderr
    earlier = out.read_bytes()
    if output.endswith(".npy"):
        monkeypatch.setattr(np, "save", _disk_full(lambda array: _npy_bytes(array)))
    else:
        monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda frame, target, **kw: _disk_full(
            lambda: frame.to_csv().encode() * 10)(target))
    (tmp_path / "texts.txt").write_text("other text\n")
    result = sktransfer_in_process(capsys, "embed", str(tmp_path / "texts.txt"), "-o", str(out), "--no-cache",
                                   "--quiet", "--overwrite")
    assert_one_line_error(result, 1, f"cannot write {out}", "No space left on device", "requested and",
                          f"the earlier {output} is unchanged")
    assert out.read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["texts.txt", output])  # no partial temporary file


def test_a_failed_folder_run_leaves_neither_file(photo_folder, tmp_path, capsys, monkeypatch):
    # The .npy is written, then its list of paths fails: neither appears, as if the run never happened.
    monkeypatch.setattr(Path, "write_text", lambda self, text, **kw: _disk_full(lambda: text.encode())(self))
    result = sktransfer_in_process(capsys, "embed", str(photo_folder), "-o", str(tmp_path / "p.npy"), "--no-cache",
                                   *IMAGE_FLAGS)
    assert_one_line_error(result, 1, f"cannot write {tmp_path / 'p.npy'}", "no file was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_cache_export_refuses_an_existing_file_and_writes_atomically(tmp_path, capsys, monkeypatch):
    from sktransfer import EmbeddingCache, TextEncoder

    cache = tmp_path / "cache"
    TextEncoder(cache=EmbeddingCache(cache)).fit(["a"]).transform(["a fine film", "a dull film"])
    out = tmp_path / "exported.parquet"
    out.write_bytes(b"an earlier export")
    refused = sktransfer_in_process(capsys, "cache", "export", str(out), "--cache", str(cache))
    assert_one_line_error(refused, 2, f"{out} exists", "--overwrite")
    assert out.read_bytes() == b"an earlier export"

    from sktransfer.cache import EmbeddingCache as Cache

    real_export = Cache.export

    def full_disk(self, path, **kwargs):
        real_export(self, path, **kwargs)
        with open(path, "r+b") as handle:
            handle.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Cache, "export", full_disk)
    for target in [str(out), f"{tmp_path}/dataset/"]:
        failed = sktransfer_in_process(capsys, "cache", "export", target, "--cache", str(cache), "--overwrite")
        assert_one_line_error(failed, 1, f"cannot export to {target}", "No space left on device")
    assert out.read_bytes() == b"an earlier export"
    assert list((tmp_path / "dataset").iterdir()) == []  # no truncated part file for 'cache import' to choke on
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "dataset", "exported.parquet"]
    monkeypatch.undo()
    done = sktransfer_in_process(capsys, "cache", "export", str(out), "--cache", str(cache), "--overwrite")
    assert done.returncode == 0 and "exported 2 entries" in done.stdout
    assert EmbeddingCache(tmp_path / "home").import_(out) == 2
    url = f"memory://sktransfer-cli-{tmp_path.name}/one.parquet"
    assert sktransfer_in_process(capsys, "cache", "export", url, "--cache", str(cache)).returncode == 0
    assert_one_line_error(sktransfer_in_process(capsys, "cache", "export", url, "--cache", str(cache)), 2,
                          f"{url} exists", "--overwrite")


def test_scheduler_output_folder_is_refused_before_connecting(tmp_path, capsys):
    (tmp_path / "texts.txt").write_text("hello\n")
    taken = tmp_path / "features"
    taken.mkdir()
    (taken / "part.0.parquet").write_bytes(b"earlier partition")
    args = ["embed", str(tmp_path / "texts.txt"), "-o", str(taken), "--scheduler", "tcp://127.0.0.1:1", "--quiet"]
    assert_one_line_error(sktransfer_in_process(capsys, *args), 2, f"output {taken} exists", "--overwrite")
    (taken / "notes.txt").write_text("mine")  # not a Parquet dataset: --overwrite does not delete it
    assert_one_line_error(sktransfer_in_process(capsys, *args, "--overwrite"), 2, "holds notes.txt",
                          "not replaced even with --overwrite")
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt", "part.0.parquet"]


def test_atomic_output_replaces_a_folder_in_one_step(tmp_path):
    from sktransfer._cli_embed import atomic_output

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "part.0.parquet").write_text("old")
    with atomic_output(folder) as staging:
        staging.mkdir()
        (staging / "part.0.parquet").write_text("new")
    assert [(p.name, p.read_text()) for p in folder.iterdir()] == [("part.0.parquet", "new")]
    with pytest.raises(KeyboardInterrupt), atomic_output(folder) as staging:
        staging.mkdir()
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_output_replaces_several_files_together_or_none(tmp_path, monkeypatch):
    import os

    from sktransfer._cli_embed import atomic_output

    pair = [tmp_path / "p.npy", tmp_path / "p.npy.items.txt"]
    for path in pair:
        path.write_text("old")
    real_fsync, calls = os.fsync, []

    def fsync(descriptor):  # the second file's late write error (fsync reports ENOSPC on some file systems)
        calls.append(descriptor)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="No space"), atomic_output(*pair) as temporaries:
        for temporary in temporaries:
            temporary.write_text("new")
    assert [path.read_text() for path in pair] == ["old", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy", "p.npy.items.txt"]
    monkeypatch.undo()
    with atomic_output(*pair) as temporaries:
        for temporary in temporaries:
            temporary.write_text("new")
    assert [path.read_text() for path in pair] == ["new", "new"]


# ------------------------------------------------------------------ tables: --keep, NA words, whole-column counts
def test_keep_carries_table_columns_into_parquet(tmp_path, capsys):
    table = pd.DataFrame({"id": [7, 8, 9], "label": ["pos", "neg", "pos"], "review": ["great", "dull", "fine"]})
    table.to_csv(tmp_path / "reviews.csv", index=False)
    table.to_parquet(tmp_path / "reviews.parquet")
    for source in ["reviews.csv", "reviews.parquet"]:
        out = tmp_path / f"out-{source}.parquet"
        result = sktransfer_in_process(capsys, "embed", str(tmp_path / source), "--column", "review", "-o", str(out),
                                       "--keep", "id,label", "--no-cache", "--quiet")
        assert result.returncode == 0, result.stderr
        frame = pd.read_parquet(out)
        assert list(frame.columns[:4]) == ["item", "id", "label", "textencoder_000"] and frame.shape == (3, 387)
        # A CSV's columns are carried as written (text); a Parquet input's keep their types.
        ids = ["7", "8", "9"] if source.endswith(".csv") else [7, 8, 9]
        assert frame["id"].tolist() == ids and frame["label"].tolist() == ["pos", "neg", "pos"]
        assert frame["item"].tolist() == ["great", "dull", "fine"]


@pytest.mark.parametrize(
    "arguments, fragments",
    [
        (["{table}", "--column", "review", "-o", "{tmp}/x.parquet", "--keep", "id,lable"],
         ["--keep", "no column 'lable'", "columns: ['id', 'label', 'review']"]),
        (["{table}", "--column", "review", "-o", "{tmp}/x.npy", "--keep", "id"],
         ["--keep copies columns into a Parquet output", "-o x.parquet"]),
        (["{texts}", "-o", "{tmp}/x.parquet", "--keep", "id"], ["--keep copies columns of a CSV", "texts.txt"]),
        (["{table}", "--column", "review", "-o", "{tmp}/x.parquet", "--keep", ","], ["--keep ',' names no column"]),
    ],
    ids=["unknown-column", "npy-output", "list-file", "empty"],
)
def test_keep_mistakes_are_named(arguments, fragments, tmp_path, capsys):
    pd.DataFrame({"id": [1], "label": ["pos"], "review": ["fine"]}).to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "texts.txt").write_text("hello\n")
    values = dict(tmp=tmp_path, table=tmp_path / "table.csv", texts=tmp_path / "texts.txt")
    result = sktransfer_in_process(capsys, "embed", *[a.format(**values) for a in arguments], "--no-cache", "--quiet")
    assert_one_line_error(result, 2, *fragments)
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "x.npy").exists()


def test_na_words_are_texts_and_only_empty_cells_are_missing(tmp_path, capsys):
    (tmp_path / "words.csv").write_text("id,text\n1,NA\n2,None\n3,\n4,null\n5,n/a\n6,nan\n")
    refused = sktransfer_in_process(capsys, "embed", str(tmp_path / "words.csv"), "--column", "text", "-o",
                                    str(tmp_path / "w.parquet"), "--no-cache", "--quiet")
    assert_one_line_error(refused, 1, "index 2", "missing value", "1 of 6 items")
    kept = sktransfer_in_process(capsys, "embed", str(tmp_path / "words.csv"), "--column", "text", "-o",
                                 str(tmp_path / "w.parquet"), "--no-cache", "--quiet", "--on-error", "nan")
    assert kept.returncode == 0 and "1 NaN rows" in kept.stdout, kept.stderr
    frame = pd.read_parquet(tmp_path / "w.parquet")
    assert frame["item"].tolist()[:2] == ["NA", "None"] and frame["item"].tolist()[3:] == ["null", "n/a", "nan"]
    assert frame["item"].isna().tolist() == [False, False, True, False, False, False]  # a null, not the word "nan"
    features = frame.iloc[:, 1:].to_numpy()
    assert np.isnan(features[2]).all() and np.isfinite(np.delete(features, 2, axis=0)).all()


def test_missing_values_are_counted_over_the_whole_column(tmp_path, capsys):
    # The first row is missing: a fit on a one-item sample used to report "1 of 1 items".
    pd.DataFrame({"id": range(40), "text": [None] + ["fine"] * 20 + [None] + ["ok"] * 18}).to_csv(
        tmp_path / "gaps.csv", index=False)
    result = sktransfer_in_process(capsys, "embed", str(tmp_path / "gaps.csv"), "--column", "text", "-o",
                                   str(tmp_path / "g.npy"), "--no-cache", "--quiet")
    assert_one_line_error(result, 1, "the item at index 0 is a missing value", "2 of 40 items are not strings",
                          "--on-error nan")
    assert "holds numbers" not in result.stderr


def test_the_summary_counts_this_runs_cache_hits(tmp_path, capsys):
    # In one process (the docs run every command so) a cache folder's statistics are shared:
    # each summary must count its own run, not every run before it.
    (tmp_path / "texts.txt").write_text("first text\nsecond text\n")
    cache = tmp_path / "cache"
    runs = [sktransfer_in_process(capsys, "embed", str(tmp_path / "texts.txt"), "-o", str(tmp_path / f"{n}.npy"),
                                  "--cache", str(cache), "--quiet") for n in range(2)]
    assert f"; cache {cache}: 0 hits, 2 encoded" in runs[0].stdout, runs[0].stderr
    assert f"; cache {cache}: 2 hits, 0 encoded" in runs[1].stdout, runs[1].stderr
