"""What netlab keeps on disk about a lab: a write-ahead journal, the scenario, a lock, logs.

Kept under /run/netlab (tmpfs: it goes with a reboot, as the namespaces do), one directory per lab.
The journal records each namespace before it is created and each process once started, so `down`
removes exactly what was made, also after a crash.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..core.errors import NetlabError

ROOT = Path(os.environ.get("NETLAB_STATE_DIR", "/run/netlab"))


@dataclass
class Journal:
    """The lab's record: namespaces it may have created, processes it started, whether up finished."""
    namespaces: list[str]
    pids: dict[int, str]  # pid -> "pod/container"
    complete: bool
    # A node on a real host (nodehost): what it changed in the host's own stack, in order.
    links: list = field(default_factory=list)
    routes: list = field(default_factory=list)       # (dst, via, dev)
    sysctls: dict = field(default_factory=dict)      # key -> the value before netlab


class LabState:
    def __init__(self, lab: str):
        self.lab = lab
        self.dir = ROOT / "labs" / lab
        self._journal = None

    # ------------------------------------------------------------ lifecycle of the record

    def exists(self) -> bool:
        return (self.dir / "lab.json").exists()

    def begin(self, source: str, text: str, summary: Optional[dict] = None) -> None:
        """Start a fresh record for an `up`; written before anything is created. `summary`
        (nodes, pods, namespaces) lets `status` answer without parsing the scenario again."""
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        info = {"name": self.lab, "source": source, "text": text, "created": time.time(),
                "pid": os.getpid()} | ({"summary": summary} if summary is not None else {})
        tmp = self.dir / "lab.json.tmp"
        tmp.write_text(json.dumps(info))
        tmp.replace(self.dir / "lab.json")
        self._journal = open(self.dir / "journal", "a", buffering=1)

    def record(self, line: str) -> None:
        # Line-buffered append: on a crash the kernel still holds what was written.
        self._journal.write(line + "\n")

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ reading

    def info(self) -> dict:
        try:
            return json.loads((self.dir / "lab.json").read_text())
        except (OSError, ValueError):
            return {}

    def journal(self) -> Journal:
        """The journal read back: the one reader of it (up, down, clean and nodehost use this)."""
        j = Journal([], {}, False)
        try:
            lines = (self.dir / "journal").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            kind, _, rest = line.partition(" ")
            words = rest.split()
            if kind == "netns" and rest:
                j.namespaces.append(rest)
            elif kind == "forget" and rest in j.namespaces:
                j.namespaces.remove(rest)
            elif kind == "forget" and words[:1] == ["link"] and words[1:2] and words[1] in j.links:
                j.links.remove(words[1])
            elif kind == "forget" and words[:1] == ["route"] and tuple(words[1:]) in j.routes:
                j.routes.remove(tuple(words[1:]))
            elif kind == "pid" and rest:
                pid, _, what = rest.partition(" ")
                if pid.isdigit():
                    j.pids[int(pid)] = what
            elif kind == "complete":
                j.complete = True
            elif kind == "link" and len(words) == 1:
                j.links.append(words[0])
            elif kind == "route" and len(words) == 3:
                j.routes.append((words[0], words[1], words[2]))
            elif kind == "sysctl" and len(words) == 2:
                j.sysctls.setdefault(words[0], words[1])   # the first is the value before netlab
        return j

    def log_path(self, owner: str, name: str) -> str:
        return str(self.dir / "logs" / f"{owner}.{name}.log")

    # ------------------------------------------------------------ locking

    def lock(self, wait: bool = False, timeout: float = 0.0):
        """An exclusive lock on the lab, so two `up`s or an `up` and a `down` never mix.

        wait: block until it is free; timeout: else retry for that many seconds before refusing.
        """
        (ROOT / "locks").mkdir(parents=True, exist_ok=True)
        path = self.lock_path()
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _flock(fd, wait, timeout)
            except BlockingIOError:
                os.close(fd)
                raise NetlabError(f"lab {self.lab} is busy: another netlab command is bringing it "
                                  f"up or down; wait for it to finish and try again") from None
            # `netlab clean` unlinks the lock files of gone labs (holding the lock): a lock taken on
            # a file that was unlinked meanwhile guards nothing, so take the new file's instead.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return _Lock(fd)
            except FileNotFoundError:
                pass
            os.close(fd)

    def lock_path(self) -> Path:
        return ROOT / "locks" / f"{self.lab}.lock"


def _flock(fd: int, wait: bool, timeout: float) -> None:
    if wait:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


class _Lock:
    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def labs() -> list[str]:
    """Names of the labs netlab has a record of."""
    try:
        return sorted(p.name for p in (ROOT / "labs").iterdir() if (p / "lab.json").exists())
    except FileNotFoundError:
        return []


def only_lab(given: Optional[str]) -> str:
    """LAB may be left out when exactly one lab is up."""
    if given:
        return given
    names = labs()
    if len(names) == 1:
        return names[0]
    if not names:
        raise NetlabError("no lab is up: bring one up with `sudo netlab up`")
    raise NetlabError(f"{len(names)} labs are up ({', '.join(names)}): name the one you mean")
