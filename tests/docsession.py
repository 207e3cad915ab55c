"""Executable docs: the shell sessions of README.md and docs/*.md, read by Sybil.

Why Sybil: it is a kept library (used by many projects' docs) that already lexes Markdown fenced
code blocks and HTML-comment directives, and has a skip directive whose reason is reported by the
test run. It lets us keep the one thing netlab-specific, a tiny "console" session parser, here.
byexample would need its own runner outside pytest (CI runs pytest only), and
pytest-markdown-docs runs Python blocks, not shell sessions.

How a document is written (see docs/README.md):

    ```console
    $ sudo netlab up
    lab three-node is up: 3 nodes, 6 pods, 82 operations in 0.08s
    ...
    ```

- A ```console block is a session: each `$ ` line is a command (a line ending in `\\` goes on
  with the next one, passed to bash as typed); the lines up to the next `$ ` are its expected output (stdout and stderr
  together, as a terminal shows them). A command with no lines below it must print nothing.
- `...` in an expected output matches anything (doctest's ELLIPSIS, also inside a line).
- What legitimately varies is normalised on BOTH sides before comparing, so the doc shows a real
  output: durations (`in 0.39s`, `time=0.036 ms`, an AGE of `1s`), MAC addresses (except
  flannel's derived `0a:58:...`), IPv6 link-local addresses, ephemeral ports (>= 32768), pids,
  veth peer indexes (`@if2`); runs of blanks become one blank (table widths follow the values).
- `<!-- skip: next "why" -->` before a block (Sybil's skip directive) shows it for reading only;
  the run reports it as skipped with that reason.
- Blocks of any other language (```yaml, ```sh, indented code) are text, never run.

This module is pure (no root, no kernel): parsing, normalising, comparing. The runner that
executes commands as root is tests/integration/test_docs.py.
"""
from __future__ import annotations

import doctest
import re
from dataclasses import dataclass
from typing import Callable, Iterator, List

from sybil import Document, Region
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer
from sybil.parsers.markdown.skip import SkipParser


@dataclass(frozen=True)
class Step:
    """One command of a session and the output the doc shows for it."""

    command: str
    expected: str
    line: int  # line of the `$ ` in the document (1-based)


def parse_session(text: str, first_line: int = 1) -> List[Step]:
    """The steps of one console block's text; `first_line` is the block's first line in the doc."""
    steps: List[Step] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise ValueError(f"line {first_line + i}: a console block starts with `$ `: {lines[i]!r}")
        line_no = first_line + i
        command = lines[i][2:]
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command + "\n" + lines[i]  # verbatim: bash reads `\` + newline itself
        i += 1
        out: List[str] = []
        while i < len(lines) and not lines[i].startswith("$ "):
            out.append(lines[i])
            i += 1
        steps.append(Step(command, "\n".join(out).rstrip("\n"), line_no))
    return steps


# Each: what varies -> a fixed token. Applied to the doc's output and the real one alike.
_NORMALISERS = [
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:ms|s)\b"), "<T>"),                 # 0.39s, 0.036 ms, 1s
    (re.compile(r"\b\d+[mhd]\b(?=[ \t]*$)", re.M), "<T>"),                   # an AGE: 3m, 2h, 1d
    (re.compile(r"\b(?!0a:58:)(?:[0-9a-f]{2}:){5}[0-9a-f]{2}\b"), "<MAC>"),
    (re.compile(r"\bfe80::[0-9a-f:]+/64"), "<LINKLOCAL>"),
    (re.compile(r"((?:\d{1,3}\.){3}\d{1,3}):(?:3[2-9]\d{3}|[4-6]\d{4})\b"), r"\1:<PORT>"),
    (re.compile(r"\bpid \d+"), "pid <PID>"),
    (re.compile(r"@if\d+"), "@if<N>"),
    (re.compile(r"[ \t]+"), " "),
]


def normalise(text: str) -> str:
    """The text with what legitimately varies replaced by tokens, blank runs as one blank."""
    for pattern, repl in _NORMALISERS:
        text = pattern.sub(repl, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


_CHECKER = doctest.OutputChecker()


def matches(expected: str, actual: str) -> bool:
    """Whether a real output is what the doc shows, up to `...` and the normalised parts."""
    want, got = normalise(expected), normalise(actual)
    if want == got:
        return True
    return _CHECKER.check_output(want + "\n", got + "\n", doctest.ELLIPSIS)


class Mismatch(AssertionError):
    """A command's real output differs from the doc's."""


def check_step(step: Step, actual: str, path: str = "") -> None:
    """Raise Mismatch, with both outputs, when `actual` is not what the doc shows."""
    if not matches(step.expected, actual):
        raise Mismatch(
            f"{path}:{step.line}: `$ {step.command}` printed something else.\n"
            f"--- the doc shows:\n{step.expected}\n--- it printed:\n{actual.rstrip()}\n"
        )


Runner = Callable[[str], str]  # a command -> its output (stdout and stderr together)


class ConsoleParser:
    """Sybil parser: each ```console block is one example that runs its steps in order."""

    def __init__(self, run: Runner) -> None:
        self.run = run
        self.lexer = FencedCodeBlockLexer("console")

    def __call__(self, document: Document) -> Iterator[Region]:
        for region in self.lexer(document):
            source = region.lexemes["source"]
            first_line = document.text.count("\n", 0, region.start) + 2
            steps = parse_session(str(source), first_line)
            yield Region(region.start, region.end, steps, self.evaluate)

    def evaluate(self, example) -> None:
        for step in example.parsed:
            check_step(step, self.run(step.command), example.path)


def parse_document(path: str, run: Runner) -> Document:
    """A Markdown file as a Sybil Document: its console sessions and skip directives, in order."""
    return Document.parse(path, ConsoleParser(run), SkipParser())
