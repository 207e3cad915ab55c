"""Cluster DNS: Kubernetes' DNS record schema, and the files that serve it.

The pure part turns a lab's Services and pods into the records of the Kubernetes DNS-Based
Service Discovery specification (kubernetes/dns docs/specification.md), and renders them as:

- a static dnsmasq config (Debian's dnsmasq-base), the server netlab really runs in the DNS pod
  behind the kube-dns Service;
- the Corefile kubeadm's CoreDNS would run with, written only so a lesson can compare the two;
- each pod's resolv.conf (and the node's, for dnsPolicy Default / hostNetwork pods).

The one impure helper writes/removes /etc/netns/<netns>/resolv.conf: `ip netns exec` bind-mounts
every file of /etc/netns/<netns>/ over /etc/ in a private mount namespace, so processes run that
way see the pod's own resolv.conf while the host's /etc/resolv.conf never changes.

dnsmasq findings (2.90, checked by tests/integration/test_clusterdns_real.py):
- `synth-domain=<ns>.pod.<zone>,<podCIDR>` answers `10-244-1-2.<ns>.pod.<zone>` with 10.244.1.2,
  exactly the spec's pod form, for every address of the range (as CoreDNS's `pods insecure`).
  Its reverse answer is ambiguous with one synth-domain per namespace over the same range (dnsmasq
  names the address in the LAST one listed), so known pods get an explicit `ptr-record=` naming
  their own namespace, which dnsmasq prefers to the synthesised one.
- `host-record=` makes A and PTR; when several host-records share an address, the FIRST one
  listed gives the PTR. So the record owning an address's PTR is written first.
- with no upstream server dnsmasq answers REFUSED for names outside its local domains; `local=/#/`
  makes it NXDOMAIN, as a cluster's upstream would answer for `web.`.
- `cname=` to a name dnsmasq does not know is still answered (the CNAME alone).
- SIGHUP rereads only hosts files, never --conf-file: changed records need a restart.
- `bind-interfaces` + `listen-address=<pod IP>` answers queries DNAT'd from a Service IP; the
  reply is un-NATed by conntrack, so clients see the Service address.
- dnsmasq opens its pid and log files as root, then runs as user dnsmasq.
- dig prints ";; WARNING: .local is reserved for Multicast DNS" for cluster.local: harmless.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

SCHEMA_VERSION = "1.1.0"
DEFAULT_DOMAIN = "cluster.local"
DEFAULT_NAMESERVER = "10.96.0.10"
NETNS_ETC = Path("/etc/netns")
_DNS_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)"
                       r"(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*")
_TXT = re.compile(r'[ -!#-+\--~]*')  # printable ASCII without '"' and ','


# ---------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Port:
    port: int
    name: str = ""  # unnamed ports have no SRV record
    protocol: str = "TCP"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    hostname: str = ""  # the endpoint's hostname field (StatefulSet pods get it)
    pod: str = ""  # name of the pod behind it, in the Service's namespace
    ready: bool = True


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    type: str = "ClusterIP"  # ClusterIP, NodePort, LoadBalancer, ExternalName
    cluster_ip: Optional[str] = None  # None: headless (clusterIP: None)
    ports: Sequence[Port] = ()
    external_name: str = ""
    endpoints: Sequence[Endpoint] = ()
    publish_not_ready: bool = False  # publishNotReadyAddresses


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    ip: str
    hostname: str = ""  # spec.hostname
    subdomain: str = ""  # spec.subdomain: the headless Service naming it


@dataclass(frozen=True)
class Record:
    """One resource record. `value` is the address (A), the target name (PTR, CNAME, SRV) or the
    text (TXT); SRV also has port, priority and weight. Names have no trailing dot."""

    name: str
    type: str
    value: str
    port: int = 0
    priority: int = 0
    weight: int = 0

    def zone_line(self, ttl: int = 30) -> str:
        """The record as a zone-file line, the form `dig` prints (for show and for tests)."""
        if self.type == "SRV":
            data = f"{self.priority} {self.weight} {self.port} {self.value}."
        elif self.type == "TXT":
            data = f'"{self.value}"'
        elif self.type == "A":
            data = self.value
        else:
            data = f"{self.value}."
        return f"{self.name}. {ttl} IN {self.type} {data}"


def dns_service_ip(service_cidr: str = "10.96.0.0/12") -> str:
    """The kube-dns ClusterIP kubeadm picks: the 10th address of the service range."""
    return str(ipaddress.ip_network(service_cidr)[10])


def kube_dns_service(cluster_ip: str, endpoints: Sequence[Endpoint] = ()) -> Service:
    """Service kube-system/kube-dns as kubeadm creates it (its ports' names give SRV records)."""
    return Service("kube-dns", "kube-system", cluster_ip=cluster_ip,
                   ports=(Port(53, "dns", "UDP"), Port(53, "dns-tcp", "TCP"),
                          Port(9153, "metrics", "TCP")),
                   endpoints=tuple(endpoints))


# ---------------------------------------------------------------------------- records

def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


def pod_record_name(ip: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    return f"{ip.replace('.', '-')}.{namespace}.pod.{domain}"


def _endpoint_hostname(ep: Endpoint, svc: Service, pods: dict) -> str:
    """The spec's hostname of an endpoint: its hostname field; else the pod's spec.hostname when
    the pod's subdomain names this Service (what the endpoints controller copies); else a unique
    identifier: the dashed IP, as CoreDNS uses."""
    if ep.hostname:
        return ep.hostname.lower()
    pod = pods.get((svc.namespace, ep.pod))
    if pod is not None and pod.hostname and pod.subdomain == svc.name:
        return pod.hostname.lower()
    return ep.ip.replace(".", "-")


def records(services: Iterable[Service], pods: Iterable[Pod] = (),
            domain: str = DEFAULT_DOMAIN, version: str = SCHEMA_VERSION) -> list[Record]:
    """Every record of the Kubernetes DNS specification for these Services and pods.

    Each address gets at most one PTR, the first claim wins in this order: ClusterIPs, headless
    endpoints, then pods (their `a-b-c-d.<ns>.pod` name)."""
    pods = list(pods)
    by_name = {(p.namespace, p.name): p for p in pods}
    out: list[Record] = [Record(f"dns-version.{domain}", "TXT", version)]
    ptr_taken: set[str] = set()

    def ptr(ip: str, target: str) -> None:
        if ip not in ptr_taken:
            ptr_taken.add(ip)
            out.append(Record(reverse_name(ip), "PTR", target))

    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        fqdn = f"{svc.name}.{svc.namespace}.svc.{domain}".lower()
        named = [p for p in svc.ports if p.name]
        if svc.type == "ExternalName":
            out.append(Record(fqdn, "CNAME", svc.external_name.rstrip(".").lower()))
            continue
        if svc.cluster_ip:
            out.append(Record(fqdn, "A", svc.cluster_ip))
            for p in named:
                out.append(Record(f"_{p.name}._{p.protocol.lower()}.{fqdn}", "SRV", fqdn,
                                  port=p.port, weight=100))
            ptr(svc.cluster_ip, fqdn)
            continue
        # headless: the name answers every ready endpoint; each endpoint has its own name
        ready = [e for e in svc.endpoints if e.ready or svc.publish_not_ready]
        hosts = [(e, f"{_endpoint_hostname(e, svc, by_name)}.{fqdn}") for e in ready]
        for e, host in hosts:
            out.append(Record(host, "A", e.ip))
            ptr(e.ip, host)
        for e in ready:
            out.append(Record(fqdn, "A", e.ip))
        for p in named:
            weight = 100 // len(hosts) if hosts else 0
            for _, host in hosts:
                out.append(Record(f"_{p.name}._{p.protocol.lower()}.{fqdn}", "SRV", host,
                                  port=p.port, weight=weight))
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        name = pod_record_name(pod.ip, pod.namespace, domain)
        out.append(Record(name, "A", pod.ip))
        ptr(pod.ip, name)
    return out


def namespaces_of(services: Iterable[Service], pods: Iterable[Pod]) -> list[str]:
    """The Kubernetes namespaces a lab has (each one gets its own `<ns>.pod.<zone>`)."""
    return sorted({s.namespace for s in services} | {p.namespace for p in pods})


def reverse_zones(cidr: str) -> list[str]:
    """The in-addr.arpa zones covering a CIDR, on octet boundaries (10.96.0.0/12 is the sixteen
    zones 96.10 ... 111.10.in-addr.arpa)."""
    net = ipaddress.ip_network(cidr)
    prefix = -(-net.prefixlen // 8) * 8  # round up to an octet
    out = []
    for sub in net.subnets(new_prefix=prefix) if prefix > net.prefixlen else [net]:
        octets = str(sub.network_address).split(".")[: prefix // 8]
        out.append(".".join([*reversed(octets), "in-addr.arpa"]))
    return out


# ---------------------------------------------------------------------------- dnsmasq

@dataclass(frozen=True)
class DnsmasqFiles:
    """Where one dnsmasq instance keeps its files (all in the lab's state directory)."""

    state_dir: Path
    conf: Path = field(init=False)
    pid: Path = field(init=False)
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        d = Path(self.state_dir)
        object.__setattr__(self, "state_dir", d)
        object.__setattr__(self, "conf", d / "dnsmasq.conf")
        object.__setattr__(self, "pid", d / "dnsmasq.pid")
        object.__setattr__(self, "log", d / "dnsmasq.log")


def dnsmasq_conf(recs: Sequence[Record], listen_ip: str, files: DnsmasqFiles,
                 domain: str = DEFAULT_DOMAIN, service_cidr: str = "10.96.0.0/12",
                 pod_cidrs: Sequence[str] = (), namespaces: Sequence[str] = (),
                 upstreams: Sequence[str] = (), ttl: int = 30,
                 log_queries: bool = False) -> str:
    """A static dnsmasq config serving `recs` on listen_ip:53 (UDP and TCP).

    Pod records: with pod_cidrs, one `synth-domain=<ns>.pod.<zone>,<cidr>` per namespace (those of
    the records, plus `namespaces`) answers every address of the range (CoreDNS's `pods
    insecure`), and pod A records inside the range are left to it; their PTRs stay explicit.
    Pod records outside the range (or without pod_cidrs) are host-records.
    No upstreams: every name outside the zone is NXDOMAIN. Upstreams: forwarded to them, and only
    the zone and the cluster's reverse zones are kept local.

    Records change (scale, delete): rewrite the file and restart the process. dnsmasq rereads
    only its hosts files on SIGHUP, never --conf-file, so host-record/srv-host changes need a
    restart (tests/integration/test_clusterdns_real.py shows both).

    Raises ValueError for a name that is not DNS-shaped (a comma or newline would be read by
    dnsmasq as another field or option)."""
    for r in recs:
        for name in (r.name, r.value if r.type not in ("A", "TXT") else "x"):
            if not _DNS_NAME.fullmatch(name):
                raise ValueError(f"not a DNS name: {name!r} (record {r.type} {r.name})")
        if r.type == "TXT" and not _TXT.fullmatch(r.value):
            raise ValueError(f"TXT text {r.value!r} must be printable, without quotes or commas")
        if r.type == "A":
            ipaddress.IPv4Address(r.value)
    for ns in namespaces:
        if not _DNS_NAME.fullmatch(f"{ns}.pod.{domain}"):
            raise ValueError(f"not a namespace name: {ns!r}")
    for ip in (listen_ip, *upstreams):
        ipaddress.ip_address(ip)
    for cidr in (service_cidr, *pod_cidrs):
        ipaddress.ip_network(cidr)
    lines = [
        "# netlab cluster DNS: dnsmasq serving Kubernetes' DNS schema, written from the lab",
        "no-resolv", "no-hosts", "bind-interfaces", f"listen-address={listen_ip}", "port=53",
        f"pid-file={files.pid}", f"log-facility={files.log}", f"local-ttl={ttl}",
        f"local=/{domain}/",
    ]
    for cidr in [service_cidr, *pod_cidrs]:
        lines += [f"local=/{z}/" for z in reverse_zones(cidr)]
    if upstreams:
        lines += [f"server={u}" for u in upstreams]
    else:
        lines.append("local=/#/")  # no upstream: NXDOMAIN, not REFUSED, for the rest
    if log_queries:
        lines.append("log-queries")

    pod_suffix = f".pod.{domain}"
    nets = [ipaddress.ip_network(c) for c in pod_cidrs]

    def synthesised(r: Record) -> bool:  # a pod record synth-domain answers (A and reverse)
        return r.name.endswith(pod_suffix) and any(ipaddress.ip_address(r.value) in n for n in nets)

    a_records = [r for r in recs if r.type == "A" and not synthesised(r)]
    synth_pods = {reverse_name(r.value) for r in recs if r.type == "A" and synthesised(r)}
    # The first host-record naming an address gives its PTR: write the PTR's owner first.
    ptr_of = {r.name: r.value for r in recs if r.type == "PTR"}
    owners = [r for r in a_records if ptr_of.get(reverse_name(r.value)) == r.name]
    owned = set(owners)
    rest = [r for r in a_records if r not in owned]
    for r in owners + rest:
        lines.append(f"host-record={r.name},{r.value}")
    for r in recs:
        if r.type == "PTR" and r.name in synth_pods and r.value.endswith(pod_suffix):
            lines.append(f"ptr-record={r.name},{r.value}")  # beats synth-domain's reverse
        elif r.type == "SRV":
            lines.append(f"srv-host={r.name},{r.value},{r.port},{r.priority},{r.weight}")
        elif r.type == "CNAME":
            lines.append(f"cname={r.name},{r.value}")
        elif r.type == "TXT":
            lines.append(f'txt-record={r.name},"{r.value}"')
    # every namespace with a Service or a pod, and the ones named, gets its pod domain
    seen = {r.name.rsplit(f".svc.{domain}", 1)[0].rsplit(".", 1)[-1]
            for r in recs if r.type in ("A", "CNAME") and r.name.endswith(f".svc.{domain}")}
    seen |= {r.name[: -len(pod_suffix)].rsplit(".", 1)[-1]
             for r in recs if r.type == "A" and r.name.endswith(pod_suffix)}
    for ns in sorted(seen | set(namespaces)) if nets else ():
        for cidr in pod_cidrs:
            lines.append(f"synth-domain={ns}{pod_suffix},{cidr}")
    return "\n".join(lines) + "\n"


def dnsmasq_argv(files: DnsmasqFiles, binary: str = "/usr/sbin/dnsmasq") -> list[str]:
    """The command that runs it in the foreground (-k), so netlab supervises the process; run it
    with `ip netns exec <dns-pod-netns>`. --conf-file also stops /etc/dnsmasq.conf being read."""
    return [binary, f"--conf-file={files.conf}", "--keep-in-foreground"]


# ---------------------------------------------------------------------------- CoreDNS

def corefile(domain: str = DEFAULT_DOMAIN, service_cidr: str = "10.96.0.0/12",
             dns_ip: str = DEFAULT_NAMESERVER, upstream: str = "/etc/resolv.conf") -> str:
    """The Corefile kubeadm's CoreDNS runs with (for comparison only: netlab does not run it).
    The service range is not part of it: CoreDNS learns ClusterIPs from the API server and
    answers their reverse zones through `in-addr.arpa`."""
    return (
        f"# kubeadm's CoreDNS config. Behind Service kube-system/kube-dns at {dns_ip}"
        f" (serviceCIDR {service_cidr}).\n"
        ".:53 {\n"
        "    errors\n"
        "    health {\n"
        "       lameduck 5s\n"
        "    }\n"
        "    ready\n"
        f"    kubernetes {domain} in-addr.arpa ip6.arpa {{\n"
        "       pods insecure\n"
        "       fallthrough in-addr.arpa ip6.arpa\n"
        "       ttl 30\n"
        "    }\n"
        "    prometheus :9153\n"
        f"    forward . {upstream} {{\n"
        "       max_concurrent 1000\n"
        "    }\n"
        "    cache 30\n"
        "    loop\n"
        "    reload\n"
        "    loadbalance\n"
        "}\n"
    )


# ---------------------------------------------------------------------------- resolv.conf

def resolv_conf(namespace: str, nameserver: str = DEFAULT_NAMESERVER,
                domain: str = DEFAULT_DOMAIN) -> str:
    """A pod's resolv.conf under dnsPolicy ClusterFirst, as kubelet writes it."""
    return (f"search {namespace}.svc.{domain} svc.{domain} {domain}\n"
            f"nameserver {nameserver}\n"
            "options ndots:5\n")


def node_resolv_conf(nameserver: str = DEFAULT_NAMESERVER, domain: str = DEFAULT_DOMAIN) -> str:
    """A node's resolv.conf, also given to dnsPolicy Default and hostNetwork pods.

    A real node's resolver is the site's; a lab has none (nothing routes to the real network and
    the host's /etc/resolv.conf names a server the lab cannot reach), so the node asks the
    cluster DNS. The search path has no namespace (a node is in none): `web.shop` resolves,
    `web` does not. ndots:2 makes `web.shop` try the search list first: with the default ndots:1
    glibc still finds it after `web.shop.` fails, but dig and nslookup (bind9's resolver) stop at
    that NXDOMAIN, and `nslookup web.shop` on a node is what a lesson shows."""
    return (f"search svc.{domain} {domain}\n"
            f"nameserver {nameserver}\n"
            "options ndots:2\n")


def resolv_conf_for(namespace: str, dns_policy: str = "ClusterFirst", host_network: bool = False,
                    nameserver: str = DEFAULT_NAMESERVER, domain: str = DEFAULT_DOMAIN) -> str:
    """Kubelet's choice: Default, or ClusterFirst on the host network, gets the node's file;
    ClusterFirst and ClusterFirstWithHostNet get the cluster one."""
    if dns_policy == "Default" or (host_network and dns_policy == "ClusterFirst"):
        return node_resolv_conf(nameserver, domain)
    return resolv_conf(namespace, nameserver, domain)


# ---------------------------------------------------------------------------- /etc/netns (impure)

def _netns_dir(netns: str, root: Path) -> Path:
    if not netns or "/" in netns or netns in (".", ".."):
        raise ValueError(f"not a namespace name: {netns!r}")
    return Path(root) / netns


def write_netns_resolv(netns: str, text: str, root: Path = NETNS_ETC) -> Path:
    """Write /etc/netns/<netns>/resolv.conf (atomically: a half-written file is never seen)."""
    d = _netns_dir(netns, root)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "resolv.conf"
    tmp = d / ".resolv.conf.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def remove_netns_resolv(netns: str, root: Path = NETNS_ETC) -> None:
    """Remove /etc/netns/<netns>/resolv.conf, and the directory if nothing else is in it.
    Harmless when already gone."""
    d = _netns_dir(netns, root)
    for name in ("resolv.conf", ".resolv.conf.tmp"):
        try:
            (d / name).unlink()
        except FileNotFoundError:
            pass
    try:
        d.rmdir()
    except OSError:
        pass  # gone already, or holds other files (hosts, ...) someone else wrote
