"""Named network namespaces, as `ip netns` makes them: created in process (no fork), mounted under
/run/netns, entered by a thread (setns) or for good by a process (with its /etc/netns files),
marked as a lab's (the alias of `lo`), removed. No pyroute2: plain rtnetlink where it needs any.
"""

from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

from ...core import ops as P
from ...core.errors import KernelError, NetlabError
from .. import nlmsg
from ..batch import open_socket

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_REC, MS_BIND, MS_SHARED = 0x4000, 0x1000, 1 << 20
MNT_DETACH = 2
NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 4

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def netns_path(ns: str) -> str:
    return os.path.join(NETNS_DIR, ns)


def netns_exists(ns: str) -> bool:
    return os.path.exists(netns_path(ns))


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_inode(ns: str) -> Optional[int]:
    try:
        return os.stat(netns_path(ns)).st_ino
    except OSError:
        return None


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with this thread in namespace `ns`; sockets and children made there stay there.

    setns() moves only the calling thread, so threads may enter different namespaces at once.
    ns "" (plan.HERE) is the namespace netlab runs in: the block runs where it is.
    """
    if ns == P.HERE:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns_path(ns), os.O_RDONLY)
    except FileNotFoundError:
        os.close(home)
        raise NetlabError(f"namespace {ns} does not exist: is the lab up? (netlab status)", 1)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def enter(ns: str) -> None:
    """Move this thread into `ns` for good (before exec of a user's command)."""
    if ns == P.HERE:
        return
    try:
        fd = os.open(netns_path(ns), os.O_RDONLY)
    except FileNotFoundError:
        raise NetlabError(f"namespace {ns} does not exist: is the lab up? (netlab status)", 1)
    _setns(fd)
    os.close(fd)


CLONE_NEWNS = 0x00020000
MS_SLAVE = 1 << 19
ETC_NETNS = "/etc/netns"


def etc_files(ns: str) -> None:
    """What `ip netns exec` does after setns: a mount namespace of this process's own in which each
    file of /etc/netns/<ns>/ is bind-mounted over its namesake in /etc (a pod's own resolv.conf,
    hosts), and /sys shows the network namespace's own devices. Call it in the process that will
    exec (a child before exec, or `netlab exec`), never in netlab's own threads."""
    if ns == P.HERE:
        return
    own = os.path.join(ETC_NETNS, ns)
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Mounts made here must not propagate back to the host's mount namespace.
    _check(_libc.mount(b"none", b"/", None, MS_SLAVE | MS_REC, None), "mount --make-rslave /")
    if _libc.umount2(b"/sys", MNT_DETACH) == 0:
        _libc.mount(ns.encode(), b"/sys", b"sysfs", 0, None)
    try:
        entries = sorted(os.listdir(own))
    except OSError:
        return
    for entry in entries:
        src, dst = os.path.join(own, entry), os.path.join("/etc", entry)
        if os.path.exists(dst):
            _check(_libc.mount(src.encode(), dst.encode(), b"none", MS_BIND, None),
                   f"mount --bind {src} {dst}")


def has_etc_files(ns: str) -> bool:
    return ns != P.HERE and os.path.isdir(os.path.join(ETC_NETNS, ns))


def enter_like_ip_netns_exec(ns: str) -> None:
    """Move this process into `ns` for good, with its /etc/netns files, as `ip netns exec` does."""
    enter(ns)
    if has_etc_files(ns):
        etc_files(ns)


_shared_done = False


def _share_netns_dir() -> None:
    """Make /run/netns a shared mount, as iproute2 does, so namespaces show in every mount ns."""
    global _shared_done
    if _shared_done:
        return
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    d = NETNS_DIR.encode()
    if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
        # Not a mount point yet: bind it onto itself first (iproute2's netns_add does the same).
        _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), "mount --bind /run/netns")
        _check(_libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None), "mount --make-shared")
    _shared_done = True


def remove_netns(ns: str) -> None:
    """Remove a named namespace (the kernel frees it once no process or socket holds it)."""
    path = netns_path(ns)
    _libc.umount2(path.encode(), MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class NetnsExists(KernelError):
    def __init__(self, ns: str):
        super().__init__(f"namespace {ns} already exists and is not this lab's: remove it "
                         f"(ip netns del {ns}) or choose another lab name with --name")
        self.ns = ns


def mark(ns: str) -> Optional[str]:
    """The lab name netlab marked a namespace with, or None if it bears no netlab mark.

    Read in a thread of its own: setns() moves only that thread, and a process is found "inside a
    lab" by its main thread's namespace (/proc/PID/ns/net), so a `down` of that lab running at the
    same moment never takes this process (a `clean` looking at every namespace) for one of its own.
    """
    found: list = []
    reader = threading.Thread(target=lambda: found.append(_read_mark(ns)))
    reader.start()
    reader.join()
    return found[0] if found else None


def marks(namespaces: list[str]) -> dict[str, Optional[str]]:
    """mark() of many namespaces, read in one thread of its own (a thread each costs ~2 ms)."""
    found: dict[str, Optional[str]] = {}
    reader = threading.Thread(target=lambda: found.update((ns, _read_mark(ns)) for ns in namespaces))
    reader.start()
    reader.join()
    return found


def _read_mark(ns: str) -> Optional[str]:
    try:
        with inside(ns):
            sock = open_socket()  # a plain socket: an IPRoute costs ~7 ms, too much per namespace
        with sock:
            sock.send(nlmsg.link_get(1, 1))
            alias = nlmsg.link_alias(sock.recv(1 << 16)) or ""
    except (NetlabError, OSError):
        return None
    return alias[len(P.MARK):] if alias.startswith(P.MARK) else None


def _mark_now(sock, lab: str) -> None:
    """Bring `lo` up with the alias netlab:<lab>, waiting for the kernel's answer."""
    sock.send(nlmsg.link_up(1, 1, alias=P.MARK + lab))
    for _seq, err in nlmsg.acks(sock.recv(1 << 16)):
        if err:
            raise OSError(err, f"marking lo: {os.strerror(err)}")


def mark_netns(ns: str, lab: str) -> None:
    """Put netlab's mark on a namespace somebody else made for a lab (`netlab adopt`)."""
    with inside(ns):
        sock = open_socket()
    with sock:
        _mark_now(sock, lab)


def is_unmounted_file(ns: str) -> bool:
    """True when /run/netns/<ns> is a plain file, not a namespace: what `ip netns add` (and netlab)
    leave when killed between creating the file and bind-mounting the namespace on it."""
    try:
        return os.stat(netns_path(ns)).st_dev == os.stat(NETNS_DIR).st_dev
    except OSError:
        return False
