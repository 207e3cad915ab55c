"""netlab's container server, like Kubernetes' agnhost netexec, small enough to run in every pod.

    python3 -m netlab.netexec --port 8080 --name web

GET /hostname  the pod's name            GET /clientip  the client's address and port, as seen here
GET /echo?msg= the message               GET /healthz   ok
GET /headers   the request's header lines, as received (what a proxy added: X-Forwarded-For...)
With --any-path, every other path answers the pod's name (like /hostname), so a test behind an
ingress can ask /api/x or /login and see which backend answered.
With --udp-port, also UDP datagrams: `hostname`, `clientip`, `echo MSG` (like agnhost's).
One thread, one selector, standard library only: a pod costs a few MB, not a web framework.
With --pod NS:NAME:PORT (repeated), one process serves many pods, each on a socket made inside its
own namespace (see core/servers.py).
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys
from urllib.parse import parse_qs, urlsplit


def answer(path: str, name: str, client: tuple, headers: str = "",
           any_path: bool = False) -> tuple[int, str]:
    url = urlsplit(path)
    if url.path == "/hostname":
        return 200, name
    if url.path == "/clientip":
        return 200, f"{client[0]}:{client[1]}"
    if url.path == "/echo":
        return 200, parse_qs(url.query).get("msg", [""])[0]
    if url.path == "/headers":
        return 200, headers
    if url.path == "/healthz" or (url.path == "/" and not any_path):
        return 200, "ok"
    if any_path:
        return 200, name
    return 404, "not found"


def _response(status: int, body: str) -> bytes:
    data = body.encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data


def udp_answer(data: bytes, name: str, client: tuple) -> bytes:
    words = data.decode("latin-1").strip().split(" ", 1)
    if words[0] == "clientip":
        return f"{client[0]}:{client[1]}".encode()
    if words[0] == "echo":
        return (words[1] if len(words) > 1 else "").encode()
    return name.encode()


def serve(port: int, name: str, host: str = "0.0.0.0", udp_port: int = 0,
          any_path: bool = False) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    udp = None
    if udp_port:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((host, udp_port))
    _loop([(listener, name)], udp, any_path)


def _reply(buf: bytes, name: str, addr: tuple, any_path: bool) -> bytes:
    parts = buf.split(b" ", 2)
    if len(parts) < 2 or parts[0] != b"GET":
        return _response(400, "bad request")
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return _response(*answer(parts[1].decode("latin-1"), name, addr, "\n".join(head), any_path))


def _loop(listeners: list, udp: socket.socket | None = None, any_path: bool = False) -> None:
    """One selector for every (listening socket, pod name), and the UDP socket if any: each
    connection is answered with the name of the pod whose socket it came to."""
    sel = selectors.DefaultSelector()
    for s, name in listeners:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, ("listen", name, None))
    if udp is not None:
        udp.setblocking(False)
        sel.register(udp, selectors.EVENT_READ, ("udp", listeners[0][1], None))
    pending: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in sel.select():
            kind, name, addr = key.data
            if kind == "udp":
                try:
                    data, client = udp.recvfrom(2048)
                    udp.sendto(udp_answer(data, name, client), client)
                except OSError:
                    pass
                continue
            if kind == "listen":
                try:
                    conn, client = key.fileobj.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                pending[conn] = b""
                sel.register(conn, selectors.EVENT_READ, ("conn", name, client))
                continue
            conn = key.fileobj
            try:
                chunk = conn.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            buf = pending[conn] + chunk
            if chunk and b"\r\n\r\n" not in buf and len(buf) < 16384:
                pending[conn] = buf
                continue
            sel.unregister(conn)
            del pending[conn]
            reply = _reply(buf, name, addr, any_path) if chunk else _response(400, "bad request")
            try:
                conn.setblocking(True)
                conn.settimeout(2)
                conn.sendall(reply)
            except OSError:
                pass
            conn.close()


def _setns(fd: int) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:     # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")


def listen_in(ns: str, port: int, host: str = "0.0.0.0") -> socket.socket:
    """A listening TCP socket made inside the named namespace `ns` (/run/netns/NS): the socket
    stays in that namespace after this process goes back to its own."""
    import os
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(1024)
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
    return s


def serve_many(pods: list) -> None:
    """One process for many pods: each (ns, name, port) gets its socket inside its namespace."""
    _loop([(listen_in(ns, port), name) for ns, name, port in pods])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="netexec", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--name", default=socket.gethostname())
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--udp-port", type=int, default=0)
    parser.add_argument("--any-path", action="store_true",
                        help="answer the pod's name on every path not listed above")
    parser.add_argument("--pod", action="append", default=[], metavar="NS:NAME:PORT",
                        help="serve this pod from here, on a socket inside its namespace "
                             "(repeatable: one process for a node's pods)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.pod:
            serve_many([(ns, name, int(port)) for ns, name, port in
                        (spec.rsplit(":", 2) for spec in args.pod)])
        else:
            serve(args.port, args.name, args.host, args.udp_port, args.any_path)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
