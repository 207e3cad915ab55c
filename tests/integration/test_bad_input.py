"""Bad input never reaches the kernel: every scenario of tests/bad_scenarios (and a few generated
here) is refused by the real CLI, `up` and `plan`, with exit 2 and one line naming the file and the
line; no namespace appears. And netlab never passes a user's command through a shell."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, leftovers, netlab, requires_root, unique_name

CORPUS = sorted((ROOT / "tests" / "bad_scenarios").glob("*.yaml"))
HEADER = re.compile(r"^# (?P<what>.+) \| expect: (?P<expect>.+)$")


def test_the_corpus_is_large_and_described():
    assert len(CORPUS) >= 40
    for path in CORPUS:
        first = path.read_bytes().split(b"\n", 1)[0].decode()
        assert HEADER.match(first), f"{path.name}: first line must be '# what | expect: fragment'"


def refuse(path: str, expect: str) -> None:
    """`netlab up PATH --name ...` (as root, when root) and `netlab plan PATH` both refuse it."""
    name = unique_name("rl")
    runs = [("plan", path)] + ([("up", path, "--name", name)] if os.geteuid() == 0 else [])
    procs = [subprocess.Popen([sys.executable, "-m", "netlab", *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in runs]
    for args, proc in zip(runs, procs):  # both at once: half the wait
        stdout, stderr = proc.communicate(timeout=120)
        r = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
        lines = r.stderr.splitlines()
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert len(lines) == 1, (args, r.stderr)
        assert re.match(rf"^netlab: error: {re.escape(path)}:\d+: ", lines[0]), lines[0]
        assert expect in lines[0], (expect, lines[0])
        assert r.stdout == ""
    assert leftovers(name) == []
    assert not (Path("/run/netlab/locks") / f"{name}.lock").exists()


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_scenario_is_refused(path):
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    refuse(str(path.relative_to(ROOT)), HEADER.match(first)["expect"])


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.yaml").write_bytes(b"")
    refuse(str(tmp_path / "empty.yaml"), "the scenario is empty")


def test_huge_file_is_refused_without_parsing(tmp_path):
    huge = tmp_path / "huge.yaml"
    with open(huge, "w") as f:
        f.write("nodes:\n")
        for i in range(100_000):
            f.write(f"  - {{name: node{i}}}\n")
    assert huge.stat().st_size > 2 << 20
    refuse(str(huge), "larger than 1 MiB")


def test_very_deep_nesting_is_refused(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("nodes: " + "[" * 100_000 + "]" * 100_000 + "\n")
    refuse(str(deep), "nested more than 50 levels deep")


def test_a_billion_laughs_is_refused_at_once(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    rows = ["a: &a [" + ", ".join(["lol"] * 10) + "]"]
    rows += [f"{c}: &{c} [" + ", ".join([f"*{p}"] * 10) + "]" for p, c in zip("abcdefgh", "bcdefghi")]
    bomb.write_text("\n".join(rows) + "\nnodes: *i\n")
    refuse(str(bomb), "anchors and aliases")


# ---------------------------------------------------------------- commands never go through a shell


@requires_root
def test_container_command_is_not_run_by_a_shell(lab_name, tmp_path):
    witness = tmp_path / "touched"
    scenario = tmp_path / "shell.yaml"
    scenario.write_text(f"""nodes:
  - name: node1
pods:
  - name: web
    node: node1
    containers:
      - name: echo
        command: [echo, "$(touch {witness})", "`touch {witness}`", ";", touch, {witness}]
      - name: sh
        command: [sleep, "infinity; touch {witness}"]
""")
    netlab("up", str(scenario), "--name", lab_name)
    log = Path(f"/run/netlab/labs/{lab_name}/logs/web.echo.log")
    for _ in range(200):  # echo is a process of its own: wait until it has written its line
        if log.exists() and log.read_text():
            break
        time.sleep(0.02)
    assert log.read_text() == f"$(touch {witness}) `touch {witness}` ; touch {witness}\n"
    assert not witness.exists()
    r = netlab("exec", lab_name, "web", "--", "echo", f"$(touch {witness})", "&&", "touch",
               str(witness))
    assert r.stdout == f"$(touch {witness}) && touch {witness}\n"
    assert not witness.exists()
    netlab("down", lab_name)
    assert not witness.exists()
