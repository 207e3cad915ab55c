"""Operations: the steps that build a lab, each a small frozen dataclass that knows its iproute2 (or
nft, sysctl) equivalent, `ip()`, so a plan renders as a shell script that builds the same lab.

Pure: no kernel. runtime.kernel applies the same operations through netlink; `Spawn` operations
start the lab's processes (runtime.workloads).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .lab import NETEXEC, Container, Lab, netexec_argv

MARK = "netlab:"  # the alias put on `lo` of every namespace netlab creates: "netlab:<lab>"


def _q(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


HERE = ""  # an op's ns: the namespace netlab runs in (a real host, `up --node`), not a named one


def _n(ns: str) -> str:
    return f"-n {_q(ns)} " if ns != HERE else ""


def _x(ns: str) -> str:
    return f"ip netns exec {_q(ns)} " if ns != HERE else ""


@dataclass(frozen=True)
class NetnsAdd:
    """Create a named network namespace, bring its `lo` up and mark it as the lab's."""
    ns: str
    lab: str

    def ip(self) -> str:
        return (f"ip netns add {_q(self.ns)}\n"
                f"ip {_n(self.ns)}link set lo up alias {_q(MARK + self.lab)}")


@dataclass(frozen=True)
class BridgeAdd:
    ns: str
    ifname: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}link add {_q(self.ifname)} type bridge"


@dataclass(frozen=True)
class VethAdd:
    """A veth pair made in `ns` whose peer is created straight inside `peer_ns`."""
    ns: str
    ifname: str
    peer_ns: str
    peer: str

    def ip(self) -> str:
        return (f"ip {_n(self.ns)}link add {_q(self.ifname)} type veth "
                f"peer name {_q(self.peer)} netns {_q(self.peer_ns)}")


@dataclass(frozen=True)
class LinkUp:
    ns: str
    ifname: str
    master: Optional[str] = None

    def ip(self) -> str:
        master = f" master {_q(self.master)}" if self.master else ""
        return f"ip {_n(self.ns)}link set {_q(self.ifname)}{master} up"


@dataclass(frozen=True)
class AddrAdd:
    ns: str
    ifname: str
    address: str
    prefixlen: int

    def ip(self) -> str:
        return f"ip {_n(self.ns)}addr add {self.address}/{self.prefixlen} dev {_q(self.ifname)}"


@dataclass(frozen=True)
class RouteAdd:
    ns: str
    dst: str          # "default" or a CIDR
    via: str
    dev: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}route add {self.dst} via {self.via} dev {_q(self.dev)}"


@dataclass(frozen=True)
class DevRouteAdd:
    """A route out of a device with no gateway (scope link), e.g. a node's Service range."""
    ns: str
    dst: str
    dev: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}route add {self.dst} dev {_q(self.dev)}"


@dataclass(frozen=True)
class HairpinOn:
    """Hairpin mode on a bridge port: the bridge may send a frame back out the port it came in
    (a pod reaching itself through its Service, DNAT'd inside the bridge by bridge netfilter)."""
    ns: str
    ifname: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}link set dev {_q(self.ifname)} type bridge_slave hairpin on"


@dataclass(frozen=True)
class HairpinOff:
    """Hairpin mode off on a bridge port (a break-it fault; the bridge's default)."""
    ns: str
    ifname: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}link set dev {_q(self.ifname)} type bridge_slave hairpin off"


@dataclass(frozen=True)
class Sysctl:
    """A sysctl under /proc/sys/net, set inside a namespace (never the root one)."""
    ns: str
    key: str          # dotted, e.g. net.ipv4.ip_forward
    value: str

    def ip(self) -> str:
        return f"{_x(self.ns)}sysctl -qw {self.key}={self.value}"


@dataclass(frozen=True)
class Spawn:
    """Start a workload process inside a namespace, detached, its output to a log."""
    ns: str
    owner: str        # pod (or node) name
    name: str         # container name
    argv: tuple[str, ...]

    def ip(self) -> str:
        return f"{_x(self.ns)}setsid -f {_q(*self.argv)} </dev/null >/dev/null 2>&1"


@dataclass(frozen=True)
class NftApply:
    """Load an nftables ruleset inside a namespace with `nft -f -` (never in the root one)."""
    ns: str
    ruleset: str

    def ip(self) -> str:
        return f"{_x(self.ns)}nft -f - <<'EOF'\n{self.ruleset.rstrip()}\nEOF"




@dataclass(frozen=True)
class LinkMtu:
    ns: str
    ifname: str
    mtu: int

    def ip(self) -> str:
        return f"ip {_n(self.ns)}link set dev {_q(self.ifname)} mtu {self.mtu}"


@dataclass(frozen=True)
class VxlanAdd:
    """A VXLAN device (flannel.1): unicast to the peers in its fdb, learning off, no multicast."""
    ns: str
    ifname: str
    vni: int
    local: str        # this node's underlay IP, the outer source address
    dev: str          # the underlay link the outer packets leave by
    port: int         # UDP destination port
    mac: str
    mtu: int

    def ip(self) -> str:
        return (f"ip {_n(self.ns)}link add {_q(self.ifname)} address {self.mac} mtu {self.mtu} "
                f"type vxlan id {self.vni} local {self.local} dev {_q(self.dev)} "
                f"dstport {self.port} nolearning")


@dataclass(frozen=True)
class NeighAdd:
    """A permanent neighbour entry: the peer VTEP's address -> its MAC (no ARP over the overlay)."""
    ns: str
    dev: str
    address: str
    mac: str

    def ip(self) -> str:
        return (f"ip {_n(self.ns)}neigh add {self.address} lladdr {self.mac} "
                f"dev {_q(self.dev)} nud permanent")


@dataclass(frozen=True)
class NeighPermanent:
    """Permanent neighbour entries in one namespace, (dev, address, mac) each: `ip neigh replace
    ... nud permanent`, several in one `ip -batch` (features/neighbours.py)."""
    ns: str
    entries: tuple[tuple[str, str, str], ...]

    def ip(self) -> str:
        lines = [f"neigh replace {a} lladdr {m} dev {_q(d)} nud permanent"
                 for d, a, m in self.entries]
        if len(lines) == 1:
            return f"ip {_n(self.ns)}{lines[0]}"
        return f"ip {_n(self.ns)}-batch - <<'EOF'\n" + "\n".join(lines) + "\nEOF"


@dataclass(frozen=True)
class LinkAddress:
    """Give a link a chosen MAC address (so that permanent neighbour entries can name it)."""
    ns: str
    ifname: str
    mac: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}link set dev {_q(self.ifname)} address {self.mac}"


@dataclass(frozen=True)
class FdbAppend:
    """A VXLAN forwarding entry: frames to `mac` go in UDP to the node at `dst`."""
    ns: str
    dev: str
    mac: str
    dst: str

    def ip(self) -> str:
        return (f"bridge {_n(self.ns)}fdb append {self.mac} dev {_q(self.dev)} dst {self.dst} "
                f"self permanent")


@dataclass(frozen=True)
class OnlinkRouteAdd:
    """A route whose gateway is on no subnet of the device (flannel's `via 10.244.2.0 onlink`)."""
    ns: str
    dst: str
    via: str
    dev: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}route add {self.dst} via {self.via} dev {_q(self.dev)} onlink"


@dataclass(frozen=True)
class WriteFile:
    """A file of the lab's own, in its state directory (a CNI conflist): never outside it."""
    path: str
    text: str

    def ip(self) -> str:
        return (f"mkdir -p {_q(str(Path(self.path).parent))} && cat > {_q(self.path)} <<'EOF'\n"
                f"{self.text.rstrip()}\nEOF")


@dataclass(frozen=True)
class EtcNetnsFile:
    """A file of one of the lab's namespaces in /etc/netns/<ns>/ (its resolv.conf): `ip netns exec`
    and netlab's own processes see it in place of /etc/<name>; the host's /etc never changes.
    Outside the state directory, so the journal records it before it is written."""
    ns: str
    name: str         # resolv.conf
    text: str

    def ip(self) -> str:
        d = f"/etc/netns/{self.ns}"
        return (f"mkdir -p {_q(d)} && cat > {_q(d + '/' + self.name)} <<'EOF'\n"
                f"{self.text.rstrip()}\nEOF")


@dataclass(frozen=True)
class CniAdd:
    """A pod's network made by calling a CNI plugin chain, as kubelet's runtime does: each plugin
    run inside the node's namespace with the CNI_* environment and its config on stdin, the
    result of one the prevResult of the next. `calls` are those calls, as the script shows them
    (with the prevResult the model predicts); the runtime threads the real results."""
    node_ns: str
    ns: str               # the pod's namespace (CNI_NETNS is /run/netns/<ns>)
    container_id: str
    ifname: str
    conflist: str         # its path in the lab's state
    owner: str            # the pod
    calls: tuple[tuple[tuple[tuple[str, str], ...], str, str], ...]   # (env, plugin, stdin JSON)
    address: str = ""     # what the pod's eth0 will have (address/prefixlen), and its gateway
    gateway: str = ""

    def ip(self) -> str:
        lines = [f"# CNI ADD of pod {self.owner} through {self.conflist}"]
        for env, plugin, stdin in self.calls:
            assigns = " ".join(f"{k}={_q(v)}" for k, v in env)
            lines.append(f"{assigns} ip netns exec {_q(self.node_ns)} {_q(plugin)} >/dev/null "
                         f"<<'EOF'\n{stdin}\nEOF")
        return "\n".join(lines)


# ---------------------------------------------------------------- undoing (break-it exercises)
# The inverse of the operations above, for the faults netlab applies on purpose (netlab.exercises)
# and their undo; never part of a lab's plan.


@dataclass(frozen=True)
class RouteDel:
    ns: str
    dst: str          # "default" or a CIDR
    via: str = ""
    dev: str = ""

    def ip(self) -> str:
        via = f" via {self.via}" if self.via else ""
        dev = f" dev {_q(self.dev)}" if self.dev else ""
        return f"ip {_n(self.ns)}route del {self.dst}{via}{dev}"


@dataclass(frozen=True)
class LinkDown:
    ns: str
    ifname: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}link set {_q(self.ifname)} down"


@dataclass(frozen=True)
class AddrDel:
    ns: str
    ifname: str
    address: str
    prefixlen: int

    def ip(self) -> str:
        return f"ip {_n(self.ns)}addr del {self.address}/{self.prefixlen} dev {_q(self.ifname)}"


@dataclass(frozen=True)
class NeighDel:
    ns: str
    dev: str
    address: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}neigh del {self.address} dev {_q(self.dev)}"


@dataclass(frozen=True)
class NeighReplace:
    """A permanent neighbour entry, replacing whatever entry (perhaps a failed one) is there."""
    ns: str
    dev: str
    address: str
    mac: str

    def ip(self) -> str:
        return (f"ip {_n(self.ns)}neigh replace {self.address} lladdr {self.mac} "
                f"dev {_q(self.dev)} nud permanent")


@dataclass(frozen=True)
class FdbDel:
    ns: str
    dev: str
    mac: str
    dst: str

    def ip(self) -> str:
        return f"bridge {_n(self.ns)}fdb del {self.mac} dev {_q(self.dev)} dst {self.dst} self"


@dataclass(frozen=True)
class NginxReload:
    """The nginx running in `ns` told to read its conf again (`nginx -s reload`: SIGHUP to the
    master named by the conf's pid file); netlab waits until the old conf's workers are gone."""
    ns: str
    argv: tuple[str, ...]     # the command line the master runs (its -c, -p and -e)

    def ip(self) -> str:
        return f"{_x(self.ns)}{_q(*self.argv)} -s reload"


@dataclass(frozen=True)
class Stop:
    """Stop the process a `Spawn` started (a server gone down): the runtime stops the pids the
    journal records for owner/name that still run inside `ns`; the script finds it by its command
    line among the namespace's processes (`ip netns pids`). `Spawn` with the same fields starts it
    again."""
    ns: str
    owner: str        # pod (or node) name
    name: str         # container name
    argv: tuple[str, ...]

    @classmethod
    def of(cls, spawn: Spawn) -> "Stop":
        return cls(spawn.ns, spawn.owner, spawn.name, spawn.argv)

    def ip(self) -> str:
        # /proc/PID/cmdline is the argv, each word ended by a NUL
        line = " ".join(self.argv) + " "
        return (f"for p in $(ip netns pids {_q(self.ns)}); do "
                f"if [ \"$(tr '\\0' ' ' </proc/$p/cmdline)\" = {_q(line)} ]; then kill $p; fi; done")


UNDO_OPS = (RouteDel, LinkDown, AddrDel, NeighDel, NeighReplace, FdbDel, HairpinOff, NginxReload,
            Stop)


Op = Union[NetnsAdd, BridgeAdd, VethAdd, LinkUp, AddrAdd, RouteAdd, Sysctl, Spawn, NftApply,
           LinkMtu, VxlanAdd, NeighAdd, FdbAppend, OnlinkRouteAdd, WriteFile, CniAdd, LinkAddress,
           DevRouteAdd, HairpinOn, EtcNetnsFile, RouteDel, LinkDown, AddrDel, NeighDel,
           NeighReplace, FdbDel, NeighPermanent, HairpinOff, NginxReload, Stop]


def as_record(op: Op) -> dict:
    """An operation as plain data for the lab's journal (a fault and its undo are kept there)."""
    from dataclasses import asdict
    return {"op": type(op).__name__, **asdict(op)}


def from_record(data: dict) -> Op:
    """The operation back from `as_record`'s data."""
    kinds = {t.__name__: t for t in Op.__args__}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "op"}
    return kinds[data["op"]](**fields)


NETEXEC_PY = str(Path(__file__).parent.parent / "netexec.py")


def argv_of(container: Container) -> tuple[str, ...]:
    """The command line that runs a container; the built-in server is a standalone script that
    runs under this Python without site-packages (-I -S: fast to start, small in memory)."""
    if container.image == NETEXEC:
        return (sys.executable, "-I", "-S", NETEXEC_PY) + container.argv[1:]
    return container.argv




def netexec(ns: str, owner: str, name: str, port: int) -> Spawn:
    """netlab's own server, answering as `owner`, started in `ns`."""
    return Spawn(ns, owner, name, argv_of(Container(name=name, argv=netexec_argv(owner, port),
                                                    port=port, image=NETEXEC)))


def script(lab: Lab, ops: list[Op], node: Optional[str] = None) -> str:
    """The plan as a shell script that builds the same lab (or, with `node`, that node's part on
    this host) with iproute2."""
    if node is None:
        undo = (f"# Run as root. Its namespaces carry netlab's mark, so `netlab down {lab.name}` "
                f"removes this lab too.")
    else:
        undo = ("# Run as root on the node's host. It changes this host's own network stack, "
                "and netlab keeps no record of it: undo it by hand.")
    head = ["#!/bin/sh",
            f"# netlab plan for lab '{lab.name}'{f' (node {node})' if node else ''} from "
            f"{lab.source}: {len(ops)} operations.", undo, "set -e"]
    return "\n".join(head + [op.ip() for op in ops]) + "\n"
