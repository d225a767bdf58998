"""The documentation's output checker itself: a false claim must fail (tests/doc_outputs.py)."""

import contextlib
import io

import pytest

from doc_outputs import PrintRecorder, check_claim, check_print_claims, code_blocks, print_claims


@pytest.mark.parametrize("claim, output", [
    ("[1 0]", "[1 0]\n"),
    ("(4, 16) (2, 16)", "(4, 16)   (2, 16)\n"),
    ("wrote 70 x 1280 ... in ... s; cache ...: 0 hits", "wrote 70 x 1280 image features in 5.4 s; cache /t/c: 0 hits"),
    ("about 0.9", "0.9499\n"),
    ("about 0.90", "0.904"),
    ("about 1.5e3", "1520.0"),
    ("about 12. Then", "12.4. Then"),
    ("score about 12 of between 90 and 110", "score 11.6 of 90"),
    ("line one line two", "line one\nline two\n"),
])
def test_true_claims_pass(claim, output):
    check_claim(claim, output)


@pytest.mark.parametrize("claim, output", [
    ("[1 0]", "[1 1]"),            # the README's zero-shot line, before issue 28
    ("[1 0]", "[1 0] [1 0]"),      # a claim covers the whole output, not a part of it
    ("[1 0 1 0]", "[1 1 1 1]"),
    ("about 0.9", "0.951"),
    ("about 0.9", "0.84"),
    ("about 0.90", "0.91"),
    ("between 1 and 2", "2.5"),
    ("True ...", "False True"),
    ("about 1.5e3", "1600"),
    ("about 12. Then", "12.6. Then"),
    ("...", "Traceback (most recent call last): ..."),   # says nothing: refused
    ("... ...", ""),
])
def test_false_claims_fail(claim, output):
    with pytest.raises(AssertionError, match="claimed|says nothing"):
        check_claim(claim, output)


def run(code):
    recorder, filename = PrintRecorder(), "<block>"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        exec(compile(code, filename, "exec"), {"print": recorder})
    check_print_claims(code, filename, recorder, "page.md")
    return stdout.getvalue()


def test_each_print_line_is_checked_on_its_own():
    code = 'print([1, 0])  # [1, 0]\nprint("a")  # [1, 0]\n'
    with pytest.raises(AssertionError, match=r"page.md, line 2: claimed '\[1, 0\]', printed 'a'"):
        run(code)


def test_prints_in_loops_and_calls_are_joined_per_line_and_the_block_output_is_kept():
    code = "for i in range(3):\n    print(i)  # 0 1 2\nprint('#', 'x' if True else 'y')  # # x\n"
    assert run(code) == "0\n1\n2\n# x\n"


def test_only_comments_on_print_lines_are_claims():
    code = "x = 1  # prose\nprint(\n    x,\n)  # 1\n# a remark above\nprint(x)\n"
    assert print_claims(code) == {4: "1"}


def test_a_claimed_line_that_never_runs_fails():
    with pytest.raises(AssertionError, match="never printed"):
        run("if False:\n    print(1)  # 1\n")


def test_blocks_keep_their_page_line_numbers():
    page = "# t\n\n```python\nprint(1)\n```\n\ntext\n```text\n1\n```\n"
    assert code_blocks(page) == [("python", "print(1)\n", 4), ("text", "1\n", 9)]


def test_a_comment_inside_a_multi_line_print_is_refused():
    with pytest.raises(AssertionError, match="inside a print"):
        print_claims("print(\n    1,  # 1\n    2)\n")
