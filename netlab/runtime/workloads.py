"""Processes in namespaces: start a lab's containers, find every process inside a lab, stop them.

A process belongs to a lab when its network namespace is one of the lab's (same inode as the
file under /run/netns), so `down` finds even processes netlab did not start itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Iterable

from . import kernel
from ..core.errors import KernelError


def spawn(ns: str, argv: tuple[str, ...], log_path: str, lab: str) -> int:
    """Start argv detached inside ns (never through a shell); return its pid.

    The process carries NETLAB_LAB=<lab> in its environment: a mark that finds it again even
    after its namespace is gone.
    """
    env = {**os.environ, "NETLAB_LAB": lab, "NETLAB_NS": ns}
    # A namespace with files in /etc/netns/<ns>/ (its own resolv.conf): the process sees them in
    # place of /etc's, as under `ip netns exec`; without them it runs as it is (no extra cost).
    etc = (lambda: kernel.etc_files(ns)) if kernel.has_etc_files(ns) else None
    with open(log_path, "ab") as log, kernel.inside(ns):
        # The child inherits the namespace of the thread that forks it.
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    close_fds=True, cwd="/", env=env, preexec_fn=etc)
        except FileNotFoundError:
            raise KernelError(f"cannot start {argv[0]!r} in {ns}: command not found; "
                              f"install it or fix the container's command") from None
        except PermissionError:
            raise KernelError(f"cannot start {argv[0]!r} in {ns}: permission denied") from None
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


def pids_in(inodes: Iterable[int]) -> dict[int, int]:
    """Live pids whose network namespace is one of `inodes`, as {pid: inode}."""
    wanted = {f"net:[{i}]": i for i in inodes if i}
    found = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if link in wanted and _alive(int(entry)):
            found[int(entry)] = wanted[link]
    found.pop(os.getpid(), None)
    return found


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(pids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after `grace` seconds."""
    pids = set(pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        for pid in list(pids):
            _reap(pid)
            if not _alive(pid):
                _reap(pid)  # it may have died just after the first reap: no zombie left behind
                pids.discard(pid)
        if pids:
            time.sleep(0.01)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        _reap(pid)


def alive(pid: int) -> bool:
    return _alive(pid)


def marked(lab: str) -> list[int]:
    """Live pids that carry NETLAB_LAB=<lab> (see spawn), wherever they are."""
    return all_marked().get(lab, [])


def all_marked() -> dict[str, list[int]]:
    """Every live process that carries a NETLAB_LAB mark, as {lab: [pids]}."""
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        for var in env:
            if var.startswith(b"NETLAB_LAB=") and _alive(int(entry)):
                found.setdefault(var[11:].decode(errors="replace"), []).append(int(entry))
                break
    return found


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def reload_nginx(ns: str, argv: tuple[str, ...], timeout: float = 10.0) -> None:
    """`nginx -s reload` inside ns, then wait until every worker of the old conf has exited:
    `-s reload` returns once the master has its SIGHUP, and until the master has started new
    workers and told the old ones to quit, the old conf still answers."""
    inode = os.stat(f"/run/netns/{ns}").st_ino
    before = set(pids_in([inode]))
    old = {p for p in before if _ppid(p) in before}       # the workers: the master's children
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv, "-s", "reload"],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise KernelError(f"nginx -s reload in {ns} failed: {proc.stderr.strip()[-300:]}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = set(pids_in([inode]))
        if not (old & now) and now - before:
            return
        time.sleep(0.02)
    raise KernelError(f"nginx in {ns} kept the workers of its old conf for {timeout:g}s after "
                      f"`nginx -s reload`: the new conf was refused (its error.log says why)")
