"""Executable docs: every console session of README.md and docs/*.md runs as root, in order.

The format and the library (Sybil) are described in tests/docsession.py and docs/README.md.

- One test per document. Each starts from a clean state (none of the doc's labs up) and must end
  with nothing left: no namespace of its labs in `ip netns list`, no state under /run/netlab/labs,
  no process carrying NETLAB_LAB of one of its labs.
- `netlab` is this checkout's code, wherever it is cloned: a `netlab` wrapper first on PATH runs
  `/opt/netlab/bin/python -m netlab` with PYTHONPATH set to the checkout this file belongs to.
  The docs show `sudo ...`; we already are root, and sudo's secure_path would find the installed
  /usr/local/bin/netlab instead, so a `sudo` shim on the same PATH runs its arguments as they are.
- The docs use the shipped scenarios' lab names (three-node, overlay, ...), so the docs tests must
  never run at the same time as each other. With `pytest -n 2` xdist's default (load)
  distribution may put two documents on two workers; an exclusive flock on one file serialises
  them whatever the distribution (the other tests use unique lab names and run alongside).
- A doc never runs `netlab clean` (it would touch other people's leftovers on a shared machine):
  docs/reliability.md shows it for reading only, marked skip.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import unittest
from pathlib import Path
from typing import Iterator, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docsession import parse_document  # noqa: E402

CHECKOUT = Path(__file__).resolve().parents[2]
DOCS = [
    "README.md",
    "docs/workshop.md",
    "docs/docker-modes.md",
    "docs/overlay.md",
    "docs/verify.md",
    "docs/graph.md",
    "docs/reliability.md",
    "docs/cni.md",
    "docs/dns.md",
    "docs/architecture.md",
    "docs/ingress.md",
    "docs/netpol.md",
    "docs/services.md",
    "docs/troubleshooting.md",
]
# Every lab and hand-made namespace the docs create: checked absent before a doc, and after it.
LABS = ["three-node", "overlay", "docker-modes", "mixed", "demo", "cni-lab", "cni-ipmasq", "ingress",
        "dns", "netpol", "services", "same-node", "netpol-dns"]
HAND_MADE = ["red", "blue"]
LOCK = "/run/netlab-docs-tests.lock"
COMMAND_TIMEOUT = 120
# While writing a doc: NETLAB_DOCS_KEEP_GOING=1 runs the sessions after a failed one too, to see
# every mismatch in one run (later ones may follow from the first).
KEEP_GOING = os.environ.get("NETLAB_DOCS_KEEP_GOING") == "1"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the docs run as root")


def _write_bin(path: Path) -> None:
    path.mkdir()
    (path / "netlab").write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={CHECKOUT}${{PYTHONPATH:+:$PYTHONPATH}} exec /opt/netlab/bin/python -m netlab \"$@\"\n"
    )
    # We are root already: run the command as it is, with this PATH (not sudo's secure_path).
    (path / "sudo").write_text("#!/bin/sh\nexec \"$@\"\n")
    for f in path.iterdir():
        f.chmod(0o755)


def leftovers() -> List[str]:
    """What of the docs' labs exists now: namespaces, state directories, processes."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    found = [f"namespace {n}" for n in names
             if n in HAND_MADE or any(n.startswith(lab + "-") for lab in LABS)]
    state = Path("/run/netlab/labs")
    if state.is_dir():
        found += [f"state {p}" for p in state.iterdir() if p.name.split("@")[0] in LABS]
    marks = {f"NETLAB_LAB={lab}".encode() for lab in LABS}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marks.intersection(env):
            found.append(f"process {proc.name}")
    return found


def _tidy() -> None:
    """After a failed doc: take down what it left (only the docs' own names, never `clean`)."""
    for lab in LABS:
        subprocess.run([str(BIN / "netlab"), "down", lab], capture_output=True, cwd=CHECKOUT,
                       env=ENV, timeout=COMMAND_TIMEOUT)
    for ns in HAND_MADE:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


BIN: Path
ENV: dict


@pytest.fixture(scope="module")
def shell_env(tmp_path_factory) -> Iterator[dict]:
    global BIN, ENV
    BIN = tmp_path_factory.mktemp("docs") / "bin"
    _write_bin(BIN)
    ENV = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")
    ENV.pop("PYTHONPATH", None)
    ENV["COLUMNS"] = "250"  # rich's tables are as wide as the doc's, not as the CI's terminal
    yield ENV


def run(command: str) -> str:
    """One shown command, as root, in the checkout; its stdout and stderr together."""
    done = subprocess.run(["bash", "-c", command], cwd=CHECKOUT, env=ENV, text=True,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT)
    return done.stdout


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("doc", DOCS)
def test_doc(doc: str, shell_env, subtests) -> None:
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = leftovers()
        assert not before, f"{doc}: the docs' labs must not be up before it runs: {before}"
        failed = None
        try:
            document = parse_document(str(CHECKOUT / doc), run)
            for example in document:
                line = document.text.count("\n", 0, example.region.start) + 1
                with subtests.test(msg=f"{doc}:{line}"):
                    if failed and not KEEP_GOING:
                        pytest.skip(f"not run: {failed} failed before it")
                    try:
                        example.evaluate()
                    except unittest.SkipTest as skip:  # Sybil's skip directive, with its reason
                        pytest.skip(f"{doc}:{line}: shown for reading only: {skip}")
                    except Exception:  # a mismatch, or a command that hangs past its timeout
                        failed = failed or f"{doc}:{line}"
                        raise
        finally:
            left = leftovers()
            if left:
                _tidy()
        assert not left, f"{doc} left things behind: {left}"
        assert failed is None, f"{doc}: the session at {failed} does not print what it shows"


def test_every_doc_is_tested() -> None:
    """A new page under docs/ is run too (docs/README.md is about writing them, not a lesson)."""
    pages = {"README.md"} | {f"docs/{p.name}" for p in (CHECKOUT / "docs").glob("*.md")
                             if p.name != "README.md"}
    assert pages == set(DOCS), f"add the new pages to DOCS: {sorted(pages - set(DOCS))}"
