"""`netlab port-forward`: a TCP listener on 127.0.0.1 in netlab's own namespace that forwards each
connection into the lab, like `kubectl port-forward`. It is a process, not a change to the host's
network: no address, route or rule is added anywhere.

Each accepted connection gets a socket made inside the target namespace (kernel.inside: a socket
stays in the namespace it was made in, whatever the thread does afterwards): for a Service, in a
node's namespace towards its ClusterIP (so kube-proxy's rules choose the endpoint); for a pod, in
the pod's own namespace towards 127.0.0.1:REMOTE, as kubectl does. Two threads copy the bytes.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from . import kernel as K


@dataclass(frozen=True)
class Target:
    ns: str           # the namespace the outgoing socket is made in
    host: str
    port: int
    what: str         # for the message: "svc/web (10.96.0.50:80) from node1"


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def connect(target: Target, timeout: float = 5.0) -> socket.socket:
    with K.inside(target.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((target.host, target.port))
    s.settimeout(None)
    return s


def _serve_one(conn: socket.socket, remote: socket.socket) -> None:
    t = threading.Thread(target=_pump, args=(remote, conn), daemon=True)
    t.start()
    _pump(conn, remote)
    t.join()
    conn.close()
    remote.close()


def listen(local: int) -> socket.socket:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", local))      # loopback only: nothing outside this machine sees it
    srv.listen(128)
    return srv


def forward(srv: socket.socket, target: Target, say: Callable[[str], None] = print,
            stop: Optional[threading.Event] = None) -> None:
    """Accept on `srv` until Ctrl-C (or `stop`), each connection forwarded to `target`."""
    srv.settimeout(0.2)
    try:
        while stop is None or not stop.is_set():
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            try:
                remote = connect(target)
            except OSError as e:
                say(f"connection to {target.what} failed: {e.strerror or e}")
                conn.close()
                continue
            threading.Thread(target=_serve_one, args=(conn, remote), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()
