"""Batched rtnetlink: queue requests per namespace, send each queue in one sendmsg(), check acks.

One plain netlink socket per namespace (opened inside it, no fork, no event loop). Requests wait
in their namespace's queue; a queue is sent when it is full, when something needs the kernel to
be up to date (`flush`), or before a queue that depends on it: a veth made in namespace A with its
peer in B must exist before B's requests about that peer run, so B's queue records "after A" and
sending B sends A first. Every request asks for an ack; every ack is read and checked, and a
failure names the operation (its iproute2 text) that failed.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Optional

from . import nlmsg

NETLINK_ROUTE = 0
SO_RCVBUFFORCE = 33
MAX_QUEUE = 200          # requests per sendmsg: their acks must fit the receive buffer
RCVBUF = 4 << 20


class BatchError(Exception):
    """A queued request failed: `op` is the plan operation it came from, `errno` the kernel's."""

    def __init__(self, op: Any, errno: int):
        super().__init__(f"{os.strerror(errno)}")
        self.op, self.errno = op, errno


def open_socket() -> socket.socket:
    """A netlink route socket in the calling thread's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.bind((0, 0))
    return sock


class Batch:
    """Per-namespace queues of rtnetlink requests and the sockets that send them."""

    def __init__(self) -> None:
        self.socks: dict[str, socket.socket] = {}
        self._queues: dict[str, list[tuple[int, bytes, Any]]] = {}
        self._after: dict[str, list[tuple[str, int]]] = {}
        self._seq = 0

    def has_socket(self, ns: str) -> bool:
        return ns in self.socks

    def add_socket(self, ns: str, sock: socket.socket) -> None:
        self.socks[ns] = sock

    def pending(self, ns: Optional[str] = None) -> bool:
        return bool(self._queues.get(ns)) if ns is not None else any(self._queues.values())

    def queue(self, ns: str, build: Callable[[int], bytes], op: Any,
              creates_in: Optional[str] = None) -> None:
        """Queue the request `build(seq)` for `ns`. `creates_in`: the other namespace in which
        this request makes something (a veth peer); its later requests wait for this one."""
        if creates_in is not None and self._queues.get(creates_in) and \
                self._waits_on(ns, creates_in, set()):
            # Queues never wait on each other in a circle: send what is queued first.
            self.flush()
        self._seq += 1
        q = self._queues.setdefault(ns, [])
        q.append((self._seq, build(self._seq), op))
        if creates_in is not None:
            self._after.setdefault(creates_in, []).append((ns, self._seq))
        if len(q) >= MAX_QUEUE:
            self.flush_ns(ns)

    def _waits_on(self, ns: str, other: str, seen: set) -> bool:
        """Whether sending the queue of `ns` would first send the queue of `other`."""
        if ns == other:
            return True
        seen.add(ns)
        for creator, seq in self._after.get(ns, ()):
            q = self._queues.get(creator)
            if q and q[0][0] <= seq and creator not in seen and self._waits_on(creator, other, seen):
                return True
        return False

    def flush_ns(self, ns: str) -> None:
        """Send the queue of `ns` (after the queues it waits for) and check every ack."""
        for other, seq in self._after.pop(ns, ()):
            q = self._queues.get(other)
            if q and q[0][0] <= seq:
                self.flush_ns(other)
        q = self._queues.pop(ns, None)
        if not q:
            return
        try:
            self._send(self.socks[ns], q)
        except BaseException:
            self.discard()
            raise

    def flush(self) -> None:
        """Send every queue; afterwards the kernel holds everything queued so far."""
        while True:
            ns = next((n for n, q in self._queues.items() if q), None)
            if ns is None:
                self._queues.clear()
                return
            self.flush_ns(ns)

    def discard(self) -> None:
        self._queues.clear()
        self._after.clear()

    def close(self) -> None:
        self.discard()
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()

    @staticmethod
    def _send(sock: socket.socket, q: list[tuple[int, bytes, Any]]) -> None:
        sock.sendall(b"".join(m for _, m, _ in q))
        ops = {seq: op for seq, _, op in q}
        failed: Optional[tuple[int, int]] = None
        waiting = len(q)
        while waiting:
            for seq, errno in nlmsg.acks(sock.recv(1 << 16)):
                if seq in ops:
                    waiting -= 1
                    if errno and (failed is None or seq < failed[0]):
                        failed = (seq, errno)
        if failed is not None:
            raise BatchError(ops[failed[0]], failed[1])
