"""verify's NetworkPolicy prober: from inside one namespace, opens every TCP connection and sends
every UDP datagram it is given at once (non-blocking, one selector), and says of each whether it
got through: `open` (connected, or a UDP answer: to port 53 it sends a DNS query), `refused` (a RST or ICMP port unreachable came
back: the packet reached the pod, no server listens) or `timeout` (nothing came back: dropped).

    printf 'tcp 10.244.1.2 80\\nudp 10.244.2.3 81\\n' | python3 connect.py --timeout 1.5

Prints `INDEX<TAB>RESULT` per input line. A busy machine can delay an answer, never invent one,
so every timeout is tried once more. Standard library only, started with -I -S like netexec.
"""

from __future__ import annotations

import errno
import selectors
import socket
import sys
import time

BATCH = 400          # sockets open at once (well below the default 1024 descriptors)
# To UDP port 53 a DNS query (id 0x4e4c, the root's NS): a DNS server ignores netexec's
# `hostname`, and answers this one, also with NXDOMAIN or REFUSED (`dig @IP . NS`).
DNS_QUERY = bytes.fromhex("4e4c00000001000000000000" "00" "0002" "0001")


def _round(targets: list[tuple[str, str, int]], timeout: float) -> list[str]:
    out = ["timeout"] * len(targets)
    sel = selectors.DefaultSelector()
    socks = []
    for i, (proto, ip, port) in enumerate(targets):
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(socket.AF_INET, kind)
        s.setblocking(False)
        socks.append(s)
        try:
            if proto == "tcp":
                err = s.connect_ex((ip, port))
                if err not in (0, errno.EINPROGRESS):
                    out[i] = _name(err)
                    continue
                sel.register(s, selectors.EVENT_WRITE, i)
            else:
                s.connect((ip, port))
                s.send(DNS_QUERY if port == 53 else b"hostname\n")
                sel.register(s, selectors.EVENT_READ, i)
        except OSError as e:
            out[i] = _name(e.errno)
    deadline = time.monotonic() + timeout
    pending = len(sel.get_map())
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(left):
            i, s = key.data, key.fileobj
            if targets[i][0] == "tcp":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                out[i] = "open" if err == 0 else _name(err)
            else:
                try:
                    s.recv(2048)
                    out[i] = "open"
                except OSError as e:
                    out[i] = _name(e.errno)
            sel.unregister(s)
            pending -= 1
    for s in socks:
        s.close()
    return out


def _name(err: int) -> str:
    if err == errno.ECONNREFUSED:
        return "refused"
    if err in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    return errno.errorcode.get(err, str(err)).lower()


def probe(targets: list[tuple[str, str, int]], timeout: float) -> list[str]:
    out: list[str] = []
    for k in range(0, len(targets), BATCH):
        out += _round(targets[k:k + BATCH], timeout)
    again = [i for i, r in enumerate(out) if r == "timeout"]
    for k in range(0, len(again), BATCH):
        part = again[k:k + BATCH]
        for i, r in zip(part, _round([targets[i] for i in part], timeout)):
            out[i] = r
    return out


def main(argv: list[str]) -> int:
    timeout = float(argv[argv.index("--timeout") + 1]) if "--timeout" in argv else 1.5
    targets = []
    for line in sys.stdin.read().splitlines():
        if line.strip():
            proto, ip, port = line.split()
            targets.append((proto.lower(), ip, int(port)))
    for i, r in enumerate(probe(targets, timeout)):
        sys.stdout.write(f"{i}\t{r}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
