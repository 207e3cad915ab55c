"""The executable-docs harness (tests/docsession.py) can fail: no root, no kernel.

A doc whose shown output lost a line, or whose count is wrong, must fail; one whose only
differences are timings, MACs, ports or `...` must pass.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import unittest
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docsession import Mismatch, matches, normalise, parse_document, parse_session  # noqa: E402

CHECKOUT = Path(__file__).resolve().parents[2]


def bash(command: str) -> str:
    """Run a doc's command like the real harness, but unprivileged and with this checkout's netlab."""
    env_path = CHECKOUT / "tests"
    wrapper = f"netlab() {{ PYTHONPATH={CHECKOUT} {sys.executable} -m netlab \"$@\"; }}\n"
    done = subprocess.run(["bash", "-c", wrapper + command], cwd=CHECKOUT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "COLUMNS": "250",
                               "HOME": str(env_path)})
    return done.stdout


def run_doc(tmp_path: Path, text: str) -> list:
    """Evaluate every example of a throwaway doc; the outcome of each: 'ok', 'skip: ...' or the error."""
    path = tmp_path / "doc.md"
    path.write_text(textwrap.dedent(text))
    outcomes = []
    for example in parse_document(str(path), bash):
        try:
            example.evaluate()
            outcomes.append("ok")
        except unittest.SkipTest as skip:
            outcomes.append(f"skip: {skip}")
        except Mismatch as e:
            outcomes.append(e)
    return outcomes


PLAN_DOC = """\
    Pods and namespaces of the default lab:

    ```console
    $ netlab plan | grep -c '^ip netns add '
    {count}
    $ netlab plan | grep '^ip netns add three-node-node'
    ip netns add three-node-node1
    {node2}ip netns add three-node-node3
    ```
    """


def test_the_real_doc_passes(tmp_path):
    assert run_doc(tmp_path, PLAN_DOC.format(count=10, node2="ip netns add three-node-node2\n    ")) \
        == ["ok"]


def test_a_changed_count_fails(tmp_path):
    [outcome] = run_doc(tmp_path, PLAN_DOC.format(count=9, node2="ip netns add three-node-node2\n    "))
    assert isinstance(outcome, Mismatch)
    assert "doc.md:4: `$ netlab plan | grep -c '^ip netns add '`" in str(outcome)
    assert "--- it printed:\n10" in str(outcome)


def test_a_deleted_output_line_fails(tmp_path):
    [outcome] = run_doc(tmp_path, PLAN_DOC.format(count=10, node2=""))
    assert isinstance(outcome, Mismatch)
    assert "doc.md:6:" in str(outcome)


def test_skip_is_reported_with_its_reason(tmp_path):
    outcomes = run_doc(tmp_path, """\
        <!-- skip: next "a foreground tcpdump" -->
        ```console
        $ false && this would fail
        nothing
        ```

        ```console
        $ echo ran
        ran
        ```
        """)
    assert outcomes == ["ok", "skip: a foreground tcpdump", "ok"]  # the directive is an example


def test_an_unexpected_error_output_fails(tmp_path):
    [outcome] = run_doc(tmp_path, """\
        ```console
        $ ls /nonexistent-docs-file
        ```
        """)
    assert isinstance(outcome, Mismatch)
    assert "No such file or directory" in str(outcome)


def test_parse_session_steps_and_continuations():
    steps = parse_session("$ echo a \\\n    b\na b\n$ true\n", first_line=10)
    assert [(s.command, s.expected, s.line) for s in steps] == [
        ("echo a \\\n    b", "a b", 10), ("true", "", 13)]
    with pytest.raises(ValueError, match="line 3"):
        parse_session("no dollar\n", first_line=3)


@pytest.mark.parametrize("shown, real", [
    ("verify three-node: 150 checks, 150 passed, 0 failed in 0.39s",
     "verify three-node: 150 checks, 150 passed, 0 failed in 12.01s"),
    ("64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.036 ms",
     "64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=1.5 ms"),
    ("veth-web@if2     UP             be:36:73:08:0d:1d <BROADCAST>",
     "veth-web@if3 UP 12:aa:73:08:0d:ff <BROADCAST>   "),
    ("10.244.1.2:60446", "10.244.1.2:33012"),
    ("three-node  scenarios/three-node.yaml  up     3s", "three-node scenarios/three-node.yaml up 1m"),
    ("lab three-node is up: ...\nweb ...\n...", "lab three-node is up: 1 nodes\nweb 2/2\ndb\ncache"),
])
def test_what_varies_is_normalised(shown, real):
    assert matches(shown, real)


@pytest.mark.parametrize("shown, real", [
    ("verify three-node: 150 checks", "verify three-node: 144 checks"),
    ("10.244.1.2:8080", "10.244.1.2:8081"),                        # a fixed port is not ephemeral
    ("link/ether 0a:58:c0:a8:01:0b", "link/ether 0a:58:c0:a8:01:0c"),  # flannel's MACs are derived
    ("a\nb\nc", "a\nc"),
    ("a\nc", "a\nb\nc"),
])
def test_what_is_real_is_compared(shown, real):
    assert not matches(shown, real)


def test_normalise_keeps_lines():
    assert normalise("a    b  \n\tc\n") == "a b\n c"
