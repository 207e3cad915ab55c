"""verify's Service client: asks a netexec server (through a ClusterIP, NodePort or LoadBalancer
IP) several times, each time on a new connection (so kube-proxy chooses an endpoint anew), and
prints one line per try: `ok<TAB>answer` or `err<TAB>refused|timeout|unreachable|reset|...`.

    python3 svcclient.py tcp 10.96.0.50 80 /hostname 20 [--want a,b,c] [--timeout 2] [--retries 2]
    python3 svcclient.py udp 10.96.0.50 53 hostname 5

Run inside a namespace by verify (nsenter). --want stops as soon as every named answer came;
--stop-on-loss at the first try lost (where one lost try already fails the check).
--retries asks again (a new connection) after a timeout before counting the try as lost: on a
busy machine a server may be starved for a while, while a broken path times out every time.
Standard library only, started with -I -S like netexec.
"""

from __future__ import annotations

import errno
import socket
import sys


def _kind(e: OSError) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    return (e.strerror or str(e)).lower()


def ask_tcp(host: str, port: int, path: str, timeout: float) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(0, "bad answer " + head.split(b"\r\n", 1)[0].decode("latin-1"))
    return body.decode("latin-1").strip()


def ask_udp(host: str, port: int, what: str, timeout: float) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))      # connected: an ICMP port unreachable becomes ECONNREFUSED
        s.send(what.encode() + b"\n")
        return s.recv(2048).decode("latin-1").strip()


def main(argv: list[str]) -> int:
    proto, host, port, path, tries = argv[:5]
    want, timeout, retries, stop = set(), 2.0, 0, False
    rest = argv[5:]
    while rest:
        if rest[0] == "--stop-on-loss":
            stop, rest = True, rest[1:]
            continue
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--want":
            want = set(value.split(","))
        elif flag == "--timeout":
            timeout = float(value)
        elif flag == "--retries":
            retries = int(value)
    seen = set()
    ask = ask_tcp if proto == "tcp" else ask_udp
    for _ in range(int(tries)):
        for attempt in range(retries + 1):
            try:
                answer = ask(host, int(port), path, timeout)
                print(f"ok\t{answer}", flush=True)
                seen.add(answer.rsplit(":", 1)[0] if path.endswith("clientip") else answer)
                break
            except OSError as e:
                if _kind(e) != "timeout" or attempt == retries:
                    print(f"err\t{_kind(e)}", flush=True)
                    if stop:
                        return 0
                    break
        if want and want <= seen:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
