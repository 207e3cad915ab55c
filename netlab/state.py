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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import NetlabError

ROOT = Path(os.environ.get("NETLAB_STATE_DIR", "/run/netlab"))


@dataclass
class Journal:
    """The lab's record: namespaces it may have created, processes it started, whether up finished."""
    namespaces: list[str]
    pids: dict[int, str]  # pid -> "pod/container"
    complete: bool


class LabState:
    def __init__(self, lab: str):
        self.lab = lab
        self.dir = ROOT / "labs" / lab
        self._journal = None

    # ------------------------------------------------------------ lifecycle of the record

    def exists(self) -> bool:
        return (self.dir / "lab.json").exists()

    def begin(self, source: str, text: str) -> None:
        """Start a fresh record for an `up`; written before anything is created."""
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        info = {"name": self.lab, "source": source, "text": text, "created": time.time(),
                "pid": os.getpid()}
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
        namespaces, pids, complete = [], {}, False
        try:
            lines = (self.dir / "journal").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind == "netns" and rest:
                namespaces.append(rest)
            elif kind == "forget" and rest in namespaces:
                namespaces.remove(rest)
            elif kind == "pid" and rest:
                pid, _, what = rest.partition(" ")
                if pid.isdigit():
                    pids[int(pid)] = what
            elif kind == "complete":
                complete = True
        return Journal(namespaces, pids, complete)

    def log_path(self, owner: str, name: str) -> str:
        return str(self.dir / "logs" / f"{owner}.{name}.log")

    # ------------------------------------------------------------ locking

    def lock(self, wait: bool = False):
        """An exclusive lock on the lab, so two `up`s or an `up` and a `down` never mix."""
        (ROOT / "locks").mkdir(parents=True, exist_ok=True)
        fd = os.open(ROOT / "locks" / f"{self.lab}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise NetlabError(f"lab {self.lab} is busy: another netlab command is bringing it up or "
                              f"down; wait for it to finish and try again") from None
        return _Lock(fd)


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
