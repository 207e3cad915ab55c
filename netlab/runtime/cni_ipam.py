"""netlab-cni's IPAM: addresses of the network's subnet for its attachments, kept in dataDir.

The allocation logic is pure, over a dict (ipam_allocate, ipam_release, ipam_gc, ipam_free);
locked_state reads and writes that dict as one JSON file per network in dataDir, under an flock
on its directory (never /var/lib/cni, so two labs never share it); the file is removed when the
last allocation is released.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from typing import Iterator, Optional

from .cni_request import E_ALREADY_ADDED, E_IO, E_NO_ADDRESS, CniError, NetConf


# ---------------------------------------------------------------- over a dict (pure)
#
# state = {"allocations": {"<containerID>/<ifname>": {"ip": ..., "containerID": ..., "ifname": ...,
#          "hostVeth": ..., ...}}, "last": "<the last address handed out>"}
# Addresses go round-robin from the last one handed out (as host-local does), so a released
# address is not handed straight back to the next pod while conntrack may still remember it.

def attachment_key(container_id: str, ifname: str) -> str:
    return f"{container_id}/{ifname}"


def pool(conf: NetConf) -> list[ipaddress.IPv4Address]:
    """The addresses IPAM may hand out: the range, minus the gateway."""
    first, last = int(conf.range_start), int(conf.range_end)
    return [ipaddress.IPv4Address(i) for i in range(first, last + 1)
            if ipaddress.IPv4Address(i) != conf.gateway]


def ipam_allocate(state: dict, conf: NetConf, key: str, record: dict,
                  requested: Optional[str] = None) -> tuple[dict, str]:
    """A new state with `key` holding the requested address, or else the next free one;
    returns (state, "a.b.c.d")."""
    allocations = state.get("allocations", {})
    if key in allocations:
        raise CniError(E_ALREADY_ADDED, "container already added to this network",
                       f"{key} holds {allocations[key]['ip']}: DEL it first")
    used = {a["ip"] for a in allocations.values()}
    addresses = pool(conf)
    if requested is not None:
        if ipaddress.IPv4Address(requested) not in addresses:
            raise CniError(E_NO_ADDRESS, "requested address not available",
                           f"{requested} is not in {conf.range_start}-{conf.range_end} "
                           f"(or is the gateway)")
        if requested in used:
            owner = next(k for k, a in allocations.items() if a["ip"] == requested)
            raise CniError(E_NO_ADDRESS, "requested address not available",
                           f"{requested} is held by {owner}")
        new = dict(allocations)
        new[key] = {**record, "ip": requested}
        return {**state, "allocations": new}, requested
    last = state.get("last")
    start = 0
    if last is not None and ipaddress.IPv4Address(last) in addresses:
        start = addresses.index(ipaddress.IPv4Address(last)) + 1
    for i in range(len(addresses)):
        ip = str(addresses[(start + i) % len(addresses)])
        if ip not in used:
            new = dict(allocations)
            new[key] = {**record, "ip": ip}
            return {"allocations": new, "last": ip}, ip
    raise CniError(E_NO_ADDRESS, "no free address",
                   f"all {len(addresses)} addresses of {conf.range_start}-{conf.range_end} are taken")


def ipam_release(state: dict, key: str) -> tuple[dict, Optional[dict]]:
    """A new state without `key`; returns (state, the released record or None)."""
    allocations = dict(state.get("allocations", {}))
    gone = allocations.pop(key, None)
    return {**state, "allocations": allocations}, gone


def ipam_gc(state: dict, valid: set[str]) -> tuple[dict, list[dict]]:
    """A new state keeping only the attachments in `valid`; returns (state, the dropped records)."""
    allocations = state.get("allocations", {})
    keep = {k: v for k, v in allocations.items() if k in valid}
    dropped = [v for k, v in allocations.items() if k not in valid]
    return {**state, "allocations": keep}, dropped


def ipam_free(state: dict, conf: NetConf) -> int:
    """How many addresses are still free."""
    used = {a["ip"] for a in state.get("allocations", {}).values()}
    return sum(1 for ip in pool(conf) if str(ip) not in used)


# ---------------------------------------------------------------- the state on disk

@contextlib.contextmanager
def locked_state(conf: NetConf) -> Iterator[dict]:
    """The network's IPAM state under an exclusive flock, written back when the block ends.

    The lock is on the network's directory in dataDir; the file (and the directory) go away when
    the last allocation does. A waiter whose directory was removed meanwhile takes a new one.
    """
    netdir = os.path.join(conf.data_dir, conf.name)
    path = os.path.join(netdir, "allocations.json")
    while True:
        try:
            os.makedirs(netdir, mode=0o755, exist_ok=True)
            fd = os.open(netdir, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise CniError(E_IO, "IPAM state directory unusable", f"{netdir}: {e}") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(netdir).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)      # removed (or replaced) while we waited: lock the new one
    try:
        try:
            with open(path) as f:
                state = json.load(f)
        except FileNotFoundError:
            state = {"allocations": {}}
        except (OSError, ValueError) as e:
            raise CniError(E_IO, "IPAM state unreadable", f"{path}: {e}") from None
        holder = {"state": state}
        try:
            yield holder
        finally:
            # Written back also when the verb failed: a rolled-back ADD leaves its release here.
            _write_state(netdir, path, holder["state"])
    finally:
        os.close(fd)


def _write_state(netdir: str, path: str, state: dict) -> None:
    try:
        if state.get("allocations"):
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(state, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(netdir)
    except OSError as e:
        raise CniError(E_IO, "IPAM state I/O failed", f"{path}: {e}") from None
