"""The command line's grammar: one spelling per flag, usage errors from the command that got them.

Everything here is argument handling, in this process and without a model: no test loads an
encoder.
"""

import pytest

from test_cli import sktransfer_in_process

CACHE_ACTIONS = [["info"], ["clear"], ["export", "out.parquet"], ["import", "in.parquet"]]


def usage_error(result, command):
    """The usage error's lines: the usage of ``sktransfer COMMAND`` and one error line of that command."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"usage: sktransfer {command} "), result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"sktransfer {command}: error: "), result.stderr
    return errors[0]


@pytest.mark.parametrize("action", CACHE_ACTIONS, ids=lambda a: a[0])
def test_every_cache_action_takes_the_cache_folder_as_cache_like_embed(action, capsys):
    from sktransfer.cli import parse_arguments

    assert parse_arguments(["cache", *action, "--cache", "embeddings-cache"]).cache == "embeddings-cache"
    # The old spelling still works for existing scripts, and is not advertised.
    assert parse_arguments(["cache", *action, "--path", "embeddings-cache"]).cache == "embeddings-cache"
    assert parse_arguments(["embed", "photos", "-o", "p.npy", "--cache", "embeddings-cache"]).cache == "embeddings-cache"
    shown = sktransfer_in_process(capsys, "cache", action[0], "--help").stdout
    assert "--cache DIR" in shown and "--path" not in shown


def test_cache_info_with_the_folder_as_a_word_names_the_flag(tmp_path, capsys):
    # What a user typed: the folder of the cache page's example, without a flag.
    result = sktransfer_in_process(capsys, "cache", "info", "embeddings-cache")
    line = usage_error(result, "cache info")
    assert "unrecognized arguments: embeddings-cache" in line and "--cache embeddings-cache" in line
    # Clearing never guesses a folder from a bare word either.
    line = usage_error(sktransfer_in_process(capsys, "cache", "clear", str(tmp_path)), "cache clear")
    assert f"--cache {tmp_path}" in line


def test_a_bad_flag_prints_the_usage_of_its_subcommand(capsys):
    result = sktransfer_in_process(capsys, "embed", "photos", "-o", "p.npy", "--bogus")
    line = usage_error(result, "embed")
    assert line.endswith("unrecognized arguments: --bogus")
    assert "--weights WEIGHTS" in result.stderr  # embed's flags, not 'sktransfer [-h] COMMAND ...'
    line = usage_error(sktransfer_in_process(capsys, "embed", "photos", "-o", "p.npy", "--ovewrite"), "embed")
    assert "did you mean --overwrite?" in line
    line = usage_error(sktransfer_in_process(capsys, "cache", "export", "out.parquet", "--fingerprnt", "ab"),
                       "cache export")
    assert "unrecognized arguments: --fingerprnt ab (did you mean --fingerprint?)" in line
    usage_error(sktransfer_in_process(capsys, "models", "--all"), "models")
    usage_error(sktransfer_in_process(capsys, "demo", "--quik"), "demo")


def test_version(capsys):
    import sktransfer

    result = sktransfer_in_process(capsys, "--version")
    assert result.returncode == 0 and result.stdout == f"sktransfer {sktransfer.__version__}\n"


@pytest.mark.parametrize("spelling", ["-o", "--output", "--out"])
def test_output_flag_spellings(spelling):
    from sktransfer.cli import parse_arguments

    args = parse_arguments(["embed", "photos", spelling, "p.npy"])
    assert args.output == "p.npy" and not args.overwrite and args.keep is None


def test_cache_and_no_cache_together_are_refused(tmp_path, capsys):
    (tmp_path / "texts.txt").write_text("hello\n")
    result = sktransfer_in_process(capsys, "embed", str(tmp_path / "texts.txt"), "-o", str(tmp_path / "t.npy"),
                                   "--cache", str(tmp_path / "c"), "--no-cache")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"sktransfer: error: --cache {tmp_path / 'c'} and --no-cache contradict "
                                     "each other; pass one of them")
    assert not (tmp_path / "t.npy").exists()


def test_library_advice_names_flags_in_errors_and_warnings(tmp_path, capsys, monkeypatch):
    """The command runs in `flag_style`: advice built with `setting` names flags, with no rewriting."""
    import warnings

    import sktransfer._cli_embed as cli_embed
    from sktransfer._messages import setting

    def advice():
        return (f"pass {setting('weights', 'IMAGENET1K_V1')}, {setting('value_range', (-1, 1), owner='ImageEncoder')}"
                f" or {setting('value_range', None, owner='ImageEncoder', shown='(low, high)')}")

    class Refusing(FakeEncoder):
        def fit(self, items):
            warnings.warn(f"warned: {advice()}", stacklevel=2)
            raise OSError(f"failed: {advice()}")

    assert advice() == "pass weights='IMAGENET1K_V1', ImageEncoder(value_range=(-1, 1)) or " \
                       "ImageEncoder(value_range=(low, high))"
    monkeypatch.setattr(cli_embed, "build_encoder", lambda kind, args: Refusing())
    (tmp_path / "texts.txt").write_text("a\n")
    result = embed_run(capsys, str(tmp_path / "texts.txt"), "-o", str(tmp_path / "t.npy"))
    flags = "pass --weights IMAGENET1K_V1, --value-range=-1,1 or --value-range LOW,HIGH"
    assert result.returncode == 1 and result.stderr.splitlines() == [f"sktransfer: warning: warned: {flags}",
                                                                     f"sktransfer: error: failed: {flags}"]


# ---------------------------------------------------------------- embed's reading and writing, with a fake encoder
class FakeEncoder:
    """Two features per item, NaN for a missing one (or an error, as on_error says); loads nothing."""

    cache = None
    model = "fake"

    def __init__(self, on_error="raise", warn=False):
        self.on_error, self.warn, self.transformed = on_error, warn, 0

    def fit(self, items):
        return self

    def get_feature_names_out(self):
        import numpy as np

        return np.array(["f0", "f1"], dtype=object)

    def transform(self, items):
        import warnings

        import numpy as np

        from sktransfer._messages import setting

        self.transformed += 1
        out = np.ones((len(items), 2), np.float32)
        for row, item in enumerate(items):
            if not isinstance(item, str):
                if self.on_error == "raise":
                    raise ValueError(f"item {row} is missing; set {setting('on_error', 'nan')} to get NaN rows "
                                     "for such items")
                out[row] = np.nan
        if self.warn and np.isnan(out).any():
            warnings.warn(f"FakeEncoder returned NaN rows for 1 of 3 items ({setting('on_error', 'nan')}); first at "
                          "index 1", stacklevel=2)
        return out


@pytest.fixture
def fake(monkeypatch):
    import sktransfer._cli_embed as cli_embed

    made = []

    def build(kind, args):
        made.append(FakeEncoder(args.on_error, warn=True))
        return made[-1]

    monkeypatch.setattr(cli_embed, "build_encoder", build)
    return made


def embed_run(capsys, *args):
    return sktransfer_in_process(capsys, "embed", *args, "--no-cache", "--quiet")


def one_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sktransfer: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_an_empty_cell_of_a_one_column_csv_is_a_missing_row_not_a_dropped_one(tmp_path, capsys, fake):
    import numpy as np

    (tmp_path / "one.csv").write_text("text\na\n\nb\n")
    result = embed_run(capsys, str(tmp_path / "one.csv"), "-o", str(tmp_path / "one.npy"), "--on-error", "nan")
    assert result.returncode == 0, result.stderr
    features = np.load(tmp_path / "one.npy")
    assert features.shape == (3, 2) and np.isnan(features[1]).all() and not np.isnan(features[[0, 2]]).any()
    # The warning names the flag, not the parameter.
    assert "(--on-error nan)" in result.stderr and "on_error=" not in result.stderr
    # Under the default policy the blank line is an error, not a silently shorter output.
    result = embed_run(capsys, str(tmp_path / "one.csv"), "-o", str(tmp_path / "two.npy"))
    assert result.returncode == 1 and "--on-error nan" in result.stderr and not (tmp_path / "two.npy").exists()


def test_kept_columns_are_carried_exactly_as_written(tmp_path, capsys, fake):
    import pandas as pd

    (tmp_path / "t.tsv").write_text("id\tzip\tempty\ttext\n12345678901234567\t007\t\thello\n2\t10\t\t\n")
    result = embed_run(capsys, str(tmp_path / "t.tsv"), "--column", "text", "--keep", "id,zip,empty",
                       "-o", str(tmp_path / "t.parquet"), "--on-error", "nan")
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(tmp_path / "t.parquet")
    assert frame["id"].tolist() == ["12345678901234567", "2"] and frame["zip"].tolist() == ["007", "10"]
    assert frame["empty"].isna().all() and frame["item"].tolist()[0] == "hello" and frame["item"].isna().tolist()[1]


def test_file_names_the_outputs_cannot_hold_are_refused_before_encoding(tmp_path, capsys, fake):
    import os

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"")
    (photos / "new\nline.png").write_bytes(b"")
    line = one_error(embed_run(capsys, str(photos), "-o", str(tmp_path / "p.npy")), repr(str(photos / "new\nline.png")),
                     "line break", "p.npy.items.txt")
    assert "\n" not in line and not fake and not list(tmp_path.glob("p.npy*"))
    (photos / "new\nline.png").unlink()
    bad = os.fsdecode(b"bad\xff.png")
    (photos / bad).write_bytes(b"")
    for output in ["p.npy", "p.parquet"]:
        one_error(embed_run(capsys, str(photos), "-o", str(tmp_path / output)), repr(str(photos / bad)), "UTF-8")
    assert not fake and not list(tmp_path.glob("p.*"))


def test_atomic_output_restores_the_targets_already_replaced(tmp_path, monkeypatch):
    import os

    from sktransfer._cli_embed import atomic_output

    first, second = tmp_path / "p.npy", tmp_path / "p.npy.items.txt"
    first.write_text("old array")
    second.write_text("old list")
    real_replace = os.replace

    def replace(source, target):
        if str(target) == str(second) and ".tmp" in str(source):
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        with atomic_output(first, second) as (a, b):
            a.write_text("new array")
            b.write_text("new list")
    assert first.read_text() == "old array" and second.read_text() == "old list"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy", "p.npy.items.txt"]
    # A target that did not exist before is removed again.
    second.unlink()
    with pytest.raises(OSError, match="No space"):
        with atomic_output(tmp_path / "new.npy", second) as (a, b):
            a.write_text("new array")
            b.write_text("new list")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy"]
    monkeypatch.setattr(os, "replace", real_replace)
    with atomic_output(first, second) as (a, b):
        a.write_text("new array")
        b.write_text("new list")
    assert first.read_text() == "new array" and sorted(p.name for p in tmp_path.iterdir()) == ["p.npy",
                                                                                                "p.npy.items.txt"]


def test_a_folder_in_the_place_of_the_items_list_is_refused_before_encoding(tmp_path, capsys, fake):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"")
    (tmp_path / "p.npy").write_text("old")
    (tmp_path / "p.npy.items.txt").mkdir()
    one_error(embed_run(capsys, str(photos), "-o", str(tmp_path / "p.npy"), "--overwrite"),
              f"cannot write the output {tmp_path / 'p.npy.items.txt'}: it is a folder")
    assert not fake and (tmp_path / "p.npy").read_text() == "old"


def test_a_long_output_name_is_written_or_refused_before_encoding(tmp_path, capsys, fake):
    import numpy as np

    (tmp_path / "texts.txt").write_text("a\nb\n")
    name = "x" * 246 + ".npy"  # 250 bytes: the file system takes it, a temporary of name + 20 it would not
    result = embed_run(capsys, str(tmp_path / "texts.txt"), "-o", str(tmp_path / name))
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / name).shape == (2, 2) and sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "texts.txt"])
    # A folder's list, <name>.items.txt, would be 260 bytes: refused before anything is encoded.
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"")
    fake.clear()
    one_error(embed_run(capsys, str(photos), "-o", str(tmp_path / name), "--overwrite"), "cannot write the output",
              ".items.txt")
    assert not fake


def test_symbolic_link_outputs(tmp_path, capsys, fake):
    import numpy as np

    (tmp_path / "texts.txt").write_text("a\nb\n")
    link = tmp_path / "link.npy"
    link.symlink_to(tmp_path / "gone" / "target.npy")  # dangling
    one_error(embed_run(capsys, str(tmp_path / "texts.txt"), "-o", str(link)), f"{link} exists", "--overwrite")
    assert not fake
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "target.npy").write_text("old")
    result = embed_run(capsys, str(tmp_path / "texts.txt"), "-o", str(link), "--overwrite")
    assert result.returncode == 0, result.stderr
    # Written through the link: the link stays, what it points to is the new output.
    assert link.is_symlink() and np.load(tmp_path / "gone" / "target.npy").shape == (2, 2)
    assert sorted(p.name for p in (tmp_path / "gone").iterdir()) == ["target.npy"]


def test_the_input_is_never_the_output(tmp_path, capsys, fake):
    import pandas as pd

    table = tmp_path / "t.parquet"
    pd.DataFrame({"item": ["a", "b"]}).to_parquet(table)
    one_error(embed_run(capsys, str(table), "--column", "item", "-o", str(table), "--overwrite"),
              "is the input", "destroy")
    assert pd.read_parquet(table)["item"].tolist() == ["a", "b"] and not fake
    (tmp_path / "l.npy.items.txt").write_text("a\nb\n")
    one_error(embed_run(capsys, str(tmp_path / "l.npy.items.txt"), "-o", str(tmp_path / "l.npy"), "--overwrite"),
              "is the input")
    assert (tmp_path / "l.npy.items.txt").read_text() == "a\nb\n"


def test_a_stale_items_list_beside_a_new_output_is_this_runs_output(tmp_path, capsys, fake):
    import numpy as np

    (tmp_path / "texts.txt").write_text("a\nb\n")
    stale = tmp_path / "new.npy.items.txt"
    stale.write_text("x.png\ny.png\nz.png\n")
    one_error(embed_run(capsys, str(tmp_path / "texts.txt"), "-o", str(tmp_path / "new.npy")), f"{stale} exists")
    assert not fake and not (tmp_path / "new.npy").exists()
    result = embed_run(capsys, str(tmp_path / "texts.txt"), "-o", str(tmp_path / "new.npy"), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "new.npy").shape == (2, 2) and not stale.exists()


def test_value_range_reaches_the_image_encoder_and_is_refused_for_texts(tmp_path, capsys):
    from sktransfer._cli_embed import EmbedError, build_encoder
    from sktransfer.cli import parse_arguments

    args = parse_arguments(["embed", "photos", "-o", "p.npy", "--value-range", "0,4095", "--no-cache"])
    assert build_encoder("image", args).value_range == (0.0, 4095.0)
    args = parse_arguments(["embed", "photos", "-o", "p.npy", "--value-range=-1,1", "--no-cache"])
    assert build_encoder("image", args).value_range == (-1.0, 1.0)
    with pytest.raises(EmbedError, match="--value-range applies to images"):
        build_encoder("text", args)
    for bad in ["1", "0,a", "5,1", "0,inf"]:
        line = usage_error(sktransfer_in_process(capsys, "embed", "photos", "-o", "p.npy", f"--value-range={bad}"),
                           "embed")
        assert "--value-range" in line and "LOW" in line


@pytest.mark.parametrize("action", CACHE_ACTIONS, ids=lambda a: a[0])
def test_the_old_path_flag_with_cache_is_refused(action, capsys):
    line = usage_error(sktransfer_in_process(capsys, "cache", *action, "--path", "A", "--cache", "B"),
                       f"cache {action[0]}")
    assert "--path A" in line and "--cache B" in line
