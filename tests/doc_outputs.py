"""Output claims in Markdown pages, checked line by line against what the code really prints.

A page makes two kinds of claim, and tests/test_docs.py checks both:

* **A comment on a ``print(...)`` line** is what that line prints::

      print(clf.predict(texts))   # [1 0]

  Every other comment is prose. A remark goes on the line above, never after the claim.
* **A** ````` ```text ````` **block** shows the output of the code block just before it (a Python
  block's whole stdout; a bash block's commands, stderr then stdout of each, as a terminal shows
  them, with the text of an ``|| echo "exit status $?"`` tail).

A claim is compared with the output after every run of whitespace (newlines included) becomes one
space, and it must cover the whole output. Inside a claim:

* ``...`` stands for any text (as doctest's ELLIPSIS), for the parts that differ between runs:
  times, absolute paths;
* ``about X`` stands for a number that rounds to X at X's precision (``about 0.9`` accepts 0.85 to
  0.95, ``about 1.5e3`` 1450 to 1550), and ``between A and B`` for a number in that closed range.

A claim made only of placeholders (``...``) says nothing and fails.
"""

import ast
import builtins
import io
import re
import sys
import tokenize
from collections import defaultdict

BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
#: A number written in a claim: no trailing dot ("about 12." is 12 then a full stop).
_WRITTEN = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_PLACEHOLDER = re.compile(rf"\.\.\.|about ({_WRITTEN})|between ({_WRITTEN}) and ({_WRITTEN})")


def code_blocks(text):
    """``(language, code, first line number)`` of every fenced block of a Markdown page, in order."""
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start(2)) + 1) for m in BLOCK.finditer(text)]


def normalise(text):
    return " ".join(text.split())


def check_claim(claim, output):
    """Raise AssertionError unless ``output`` is what ``claim`` says (module docstring's grammar)."""
    pattern, ranges, position = [], [], 0
    claim = normalise(claim)
    for match in _PLACEHOLDER.finditer(claim):
        pattern.append(re.escape(claim[position:match.start()]))
        if match.group(0) == "...":
            pattern.append(".*?")
        else:
            pattern.append(f"({NUMBER})")
            if match.group(1) is not None:
                written = match.group(1)
                mantissa, _, exponent = written.lower().partition("e")
                decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
                half = 0.5 * 10.0 ** (int(exponent or 0) - decimals)  # "about 1.5e3": 1450 to 1550
                ranges.append((float(written) - half, float(written) + half, match.group(0)))
            else:
                ranges.append((float(match.group(2)), float(match.group(3)), match.group(0)))
        position = match.end()
    pattern.append(re.escape(claim[position:]))
    assert normalise(claim.replace("...", "")), f"the claim {claim!r} says nothing checkable"
    found = re.fullmatch("".join(pattern), normalise(output), flags=re.S)
    assert found, f"claimed {claim!r}, printed {normalise(output)!r}"
    for value, (low, high, words) in zip(found.groups(), ranges):
        assert low <= float(value) <= high, f"claimed {words!r}, printed {value}"


def print_claims(code):
    """``{line: claim}`` for every comment on the line where a ``print(...)`` call ends.

    A comment inside a call that spans several lines is refused: it would read as a claim but
    belong to no printed output.
    """
    calls = [
        (node.lineno, node.end_lineno)
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    claims = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type != tokenize.COMMENT:
            continue
        line = token.start[0]
        if any(first <= line < last for first, last in calls):
            raise AssertionError(f"line {line}: a comment inside a print(...) call; put the claim after the "
                                 "closing parenthesis and remarks on the line above")
        if any(line == last for _, last in calls):
            claims[line] = token.string[1:].strip()
    return claims


class PrintRecorder:
    """A ``print`` for a page's namespace that keeps what each line of each block printed."""

    def __init__(self):
        self.printed = defaultdict(str)  # (block file name, line) -> text

    def __call__(self, *args, sep=" ", end="\n", file=None, flush=False):
        if file is not None and file is not sys.stdout:
            return builtins.print(*args, sep=sep, end=end, file=file, flush=flush)
        text = (" " if sep is None else sep).join(map(str, args)) + ("\n" if end is None else end)
        caller = sys._getframe(1)
        self.printed[caller.f_code.co_filename, caller.f_lineno] += text
        sys.stdout.write(text)
        return None


def check_print_claims(code, filename, recorder, where):
    """Check each claimed ``print`` line of one block, after the block has run."""
    for line, claim in print_claims(code).items():
        key = (filename, line)
        assert key in recorder.printed, f"{where}, line {line}: claims {claim!r}, but the line never printed"
        try:
            check_claim(claim, recorder.printed[key])
        except AssertionError as exc:
            raise AssertionError(f"{where}, line {line}: {exc}") from None
