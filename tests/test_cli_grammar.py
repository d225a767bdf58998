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


def test_missing_default_weights_name_the_flag_that_works():
    from sktransfer.cli import error_message

    library = ("Could not load MobileNet_V2_Weights.IMAGENET1K_V2 for 'mobilenet_v2': URLError: offline. Remedies: "
               "(1) network, or (2) place the file. Weights of 'mobilenet_v2' available offline here: IMAGENET1K_V1.")
    assert error_message(OSError(library)).endswith(
        "available offline here: IMAGENET1K_V1 (pass --weights IMAGENET1K_V1; 'sktransfer models' lists what is "
        "on this machine).")
    several = error_message(OSError("x. Weights of 'm' available offline here: IMAGENET1K_V1, IMAGENET1K_V2."))
    assert several.endswith("IMAGENET1K_V1, IMAGENET1K_V2 (pass --weights IMAGENET1K_V1; 'sktransfer models' "
                            "lists what is on this machine).")
