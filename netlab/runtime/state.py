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
from ..core.lab import STATE_ROOT

ROOT = Path(STATE_ROOT)


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
    # Pods wired through CNI: (node namespace, pod namespace, container id, ifname, conflist).
    cni: list = field(default_factory=list)
    # What runs now when pods came and went (`scale`, `delete`): the last `live` line, the
    # deployments' current pods (see features.deployments); {} while the scenario's hold.
    live: dict = field(default_factory=dict)
    # Namespaces whose /etc/netns/<ns>/ netlab wrote (runtime.etcnetns), recorded before writing.
    etc: list = field(default_factory=list)
    # Break-it exercises (netlab.exercises): the faults applied and not yet undone or fixed, in
    # order, each {"fault", "on", "ops", "undo", "hidden", "seed", "at", "hints"}; and the
    # exercises finished (fixed by hand, or given up with --undo), each with how it ended.
    faults: list = field(default_factory=list)
    finished: list = field(default_factory=list)


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

    def reopen(self) -> None:
        """Append to the journal of a lab that is up (scale, delete), as `begin` does for up."""
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
                if pid.isdigit():   # a pid used again: its last record, in the order made
                    j.pids.pop(int(pid), None)
                    j.pids[int(pid)] = what
            elif kind == "complete":
                j.complete = True
            elif kind == "link" and len(words) == 1:
                j.links.append(words[0])
            elif kind == "route" and len(words) == 3:
                j.routes.append((words[0], words[1], words[2]))
            elif kind == "etc" and len(words) == 1:
                if words[0] not in j.etc:
                    j.etc.append(words[0])
            elif kind == "cni" and len(words) == 5:
                j.cni.append(tuple(words))
            elif kind == "live" and rest:
                try:
                    j.live = json.loads(rest)
                except ValueError:   # a line cut by a crash: the one before it holds
                    pass
            elif kind in ("fault", "unfault", "fixed", "hint"):
                _exercise(j, kind, rest)
            elif kind == "sysctl" and len(words) == 2:
                j.sysctls.setdefault(words[0], words[1])   # the first is the value before netlab
        return j

    def write(self, path: str, text: str) -> None:
        """A file of the lab's own: only ever inside its state directory (removed with it)."""
        target = os.path.realpath(path)
        if not target.startswith(os.path.realpath(self.dir) + os.sep):
            raise NetlabError(f"{path} is outside lab {self.lab}'s state directory {self.dir}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, target)

    # ------------------------------------------------------------ break-it exercises

    def add_record(self, kind: str, data: dict) -> None:
        """Append one exercise record (fault, unfault, fixed, hint) to the journal of a lab that
        is up; the caller holds the lab's lock."""
        if kind not in ("fault", "unfault", "fixed", "hint"):
            raise ValueError(kind)
        with open(self.dir / "journal", "a") as f:
            f.write(f"{kind} {json.dumps(data, separators=(',', ':'))}\n")

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


def _exercise(j: Journal, kind: str, rest: str) -> None:
    """One exercise record: a fault applied, undone (unfault), fixed by hand, or a hint given."""
    try:
        data = json.loads(rest)
    except ValueError:
        return
    if kind == "fault":
        j.faults.append({**data, "hints": 0})
    elif kind == "hint" and j.faults:
        j.faults[-1]["hints"] = data.get("level", j.faults[-1]["hints"] + 1)
    elif kind in ("unfault", "fixed") and j.faults:
        done = j.faults.pop()
        j.finished.append({**done, "ended": kind, **data})


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
