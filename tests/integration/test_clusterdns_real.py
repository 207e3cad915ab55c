"""Real dnsmasq, configured by netlab.clusterdns, answering Kubernetes' DNS schema.

Namespaces made by hand (no lab yet): a "DNS pod" and two client pods, one in Kubernetes namespace
shop and one in default, joined by a bridge in a fourth namespace. dnsmasq runs in the DNS pod on
its pod IP; each client has /etc/netns/<netns>/resolv.conf as kubelet would write it (pointing
straight at the DNS pod's IP here: the kube-dns Service in front comes with the lab wiring).
Real dig, nslookup and getent (glibc) run in the clients with `ip netns exec`, which bind-mounts
that file over /etc/resolv.conf."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from netlab.features.dns import model as cd
from tests.conftest import requires_root, unique_name

pytestmark = requires_root

DNS_IP = "10.244.1.10"
SHOP_IP, DEFAULT_IP, NODE_IP = "10.244.1.11", "10.244.1.12", "10.244.1.13"
HEADLESS = ["10.244.1.20", "10.244.1.21", "10.244.1.22"]
POD_CIDR = "10.244.0.0/16"

SERVICES = [
    cd.Service("web", "shop", cluster_ip="10.96.0.20", ports=[cd.Port(80, "http")]),
    cd.Service("kube-dns", "kube-system", cluster_ip="10.96.0.10",
               ports=[cd.Port(53, "dns", "UDP"), cd.Port(53, "dns-tcp", "TCP")],
               endpoints=[cd.Endpoint(DNS_IP, pod="coredns")]),
    cd.Service("db", "shop", ports=[cd.Port(5432, "pg")],
               endpoints=[cd.Endpoint(HEADLESS[0], pod="db-0"),
                          cd.Endpoint(HEADLESS[1], pod="db-1"),
                          cd.Endpoint(HEADLESS[2]), cd.Endpoint("10.244.1.23", ready=False)]),
    cd.Service("ext", "shop", type="ExternalName", external_name="www.example.com"),
]
PODS = [
    cd.Pod("coredns", "kube-system", DNS_IP),
    cd.Pod("client", "shop", SHOP_IP),
    cd.Pod("client", "default", DEFAULT_IP),
    cd.Pod("db-0", "shop", HEADLESS[0], hostname="db-0", subdomain="db"),
    cd.Pod("db-1", "shop", HEADLESS[1], hostname="db-1", subdomain="db"),
]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def root_view() -> tuple[str, str, bytes]:
    return (sh("ip", "addr").stdout, sh("ip", "route").stdout,
            Path("/etc/resolv.conf").read_bytes())


def listening(netns: str) -> bool:
    out = sh("ip", "netns", "exec", netns, "ss", "-Hlnu", "sport", "=", ":53").stdout
    tcp = sh("ip", "netns", "exec", netns, "ss", "-Hlnt", "sport", "=", ":53").stdout
    return f"{DNS_IP}:53" in out and f"{DNS_IP}:53" in tcp


class Dnsmasq:
    """dnsmasq in the DNS pod's namespace, run as netlab will: the config from clusterdns, the
    argv from dnsmasq_argv, in the foreground under `ip netns exec`."""

    def __init__(self, netns: str, files: cd.DnsmasqFiles):
        self.netns, self.files, self.procs = netns, files, []

    def write(self, services, pods) -> None:
        recs = cd.records(services, pods)
        self.files.conf.write_text(cd.dnsmasq_conf(
            recs, DNS_IP, self.files, pod_cidrs=[POD_CIDR], log_queries=True))

    def start(self) -> None:
        err = open(self.files.state_dir / "stderr", "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *cd.dnsmasq_argv(self.files)],
                                stdout=subprocess.DEVNULL, stderr=err)
        err.close()
        self.procs.append(proc)
        for _ in range(200):
            if listening(self.netns) or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (self.files.state_dir / "stderr").read_text()
        assert listening(self.netns), "dnsmasq never listened on the pod IP"

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        for _ in range(200):  # the sockets go with the process
            if not listening(self.netns):
                break
            time.sleep(0.05)


@pytest.fixture
def dnslab(tmp_path):
    """Five namespaces (bridge, DNS pod, clients in shop and default, a node), dnsmasq in the DNS
    pod, the clients' resolv.conf; all removed after, and asserted gone."""
    before = root_view()
    name = unique_name("tdns")
    br, dns, shop, default, node = (f"{name}-{x}" for x in ("br", "dns", "shop", "dflt", "node"))
    made: list[str] = []
    state = tmp_path / "dns"
    state.mkdir()
    server = Dnsmasq(dns, cd.DnsmasqFiles(state))
    try:
        sh("ip", "netns", "add", br)
        made.append(br)
        sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", br, "link", "set", "br0", "up")
        hosts = [(dns, DNS_IP), (shop, SHOP_IP), (default, DEFAULT_IP), (node, NODE_IP)]
        for k, (ns, ip) in enumerate(hosts):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", br, "link", "add", f"p{k}", "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", br, "link", "set", f"p{k}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        server.write(SERVICES, PODS)
        server.start()
        cd.write_netns_resolv(shop, cd.resolv_conf("shop", nameserver=DNS_IP))
        cd.write_netns_resolv(default, cd.resolv_conf("default", nameserver=DNS_IP))
        cd.write_netns_resolv(node, cd.node_resolv_conf(nameserver=DNS_IP))
        yield {"shop": shop, "default": default, "node": node, "dns": dns,
               "files": server.files, "server": server}
    finally:
        server.stop()
        for ns in (shop, default, node):
            cd.remove_netns_resolv(ns)
        leftover_pids = [sh("ip", "netns", "pids", ns, check=False).stdout.split() for ns in made]
        for ns in reversed(made):
            sh("ip", "netns", "del", ns, check=False)

    assert all(p.returncode is not None for p in server.procs)
    assert leftover_pids == [[] for _ in made], "a process was left in a namespace"
    for ns in (br, dns, shop, default, node):
        assert not Path("/run/netns", ns).exists()
        assert not Path("/etc/netns", ns).exists()
    assert root_view() == before, "the root namespace or the host's /etc/resolv.conf changed"


def dig(ns: str, *args: str) -> str:
    return sh("ip", "netns", "exec", ns, "dig", "+time=2", "+tries=2", *args).stdout


def short(ns: str, *args: str) -> list[str]:
    return sorted(dig(ns, "+short", *args).split("\n")[:-1])


def status(ns: str, *args: str) -> str:
    for line in dig(ns, *args).splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return "no answer"


def test_service_names_and_search_path(dnslab):
    shop, default = dnslab["shop"], dnslab["default"]
    for ns in (shop, default):
        assert short(ns, "web.shop.svc.cluster.local") == ["10.96.0.20"]
        # web.shop: one dot < ndots:5, so the search list is tried, and svc.cluster.local hits
        assert short(ns, "+search", "web.shop") == ["10.96.0.20"]
        full = dig(ns, "web.shop.svc.cluster.local")
        assert f"SERVER: {DNS_IP}#53" in full  # dig took the server from the netns resolv.conf
    # the short name is namespace scope
    assert short(shop, "+search", "web") == ["10.96.0.20"]
    assert status(default, "+search", "web") == "NXDOMAIN"
    assert short(default, "+search", "web") == []

    ok = sh("ip", "netns", "exec", shop, "nslookup", "web")
    assert "Address: 10.96.0.20" in ok.stdout and "web.shop.svc.cluster.local" in ok.stdout
    bad = sh("ip", "netns", "exec", default, "nslookup", "web", check=False)
    assert bad.returncode != 0 and "NXDOMAIN" in bad.stdout
    # glibc's resolver, what every program in the pod uses, follows the same file
    assert sh("ip", "netns", "exec", shop, "getent", "hosts", "web").stdout.split()[0] == \
        "10.96.0.20"
    assert sh("ip", "netns", "exec", default, "getent", "hosts", "web", check=False).returncode != 0
    assert sh("ip", "netns", "exec", default, "getent", "hosts", "web.shop").stdout.split()[0] == \
        "10.96.0.20"


def test_srv_ptr_cname_txt(dnslab):
    ns = dnslab["default"]
    assert short(ns, "SRV", "_http._tcp.web.shop.svc.cluster.local") == [
        "0 100 80 web.shop.svc.cluster.local."]
    assert short(ns, "SRV", "_dns._udp.kube-dns.kube-system.svc.cluster.local") == [
        "0 100 53 kube-dns.kube-system.svc.cluster.local."]
    assert short(ns, "-x", "10.96.0.20") == ["web.shop.svc.cluster.local."]
    assert short(ns, "-x", "10.96.0.10") == ["kube-dns.kube-system.svc.cluster.local."]
    assert short(ns, "ext.shop.svc.cluster.local") == ["www.example.com."]
    assert short(ns, "CNAME", "ext.shop.svc.cluster.local") == ["www.example.com."]
    assert short(ns, "TXT", "dns-version.cluster.local") == ['"1.1.0"']
    ns_out = sh("ip", "netns", "exec", ns, "nslookup", "-type=SRV",
                "_http._tcp.web.shop.svc.cluster.local").stdout
    assert "service = 0 100 80 web.shop.svc.cluster.local." in ns_out


def test_headless_answers_every_ready_endpoint(dnslab):
    ns = dnslab["shop"]
    assert short(ns, "db.shop.svc.cluster.local") == sorted(HEADLESS)
    assert short(ns, "+search", "db") == sorted(HEADLESS)
    assert short(ns, "db-0.db.shop.svc.cluster.local") == [HEADLESS[0]]
    assert short(ns, "10-244-1-22.db.shop.svc.cluster.local") == [HEADLESS[2]]
    assert short(ns, "-x", HEADLESS[1]) == ["db-1.db.shop.svc.cluster.local."]
    srv = short(ns, "SRV", "_pg._tcp.db.shop.svc.cluster.local")
    assert [s.split()[-1] for s in srv] == sorted(
        ["db-0.db.shop.svc.cluster.local.", "db-1.db.shop.svc.cluster.local.",
         "10-244-1-22.db.shop.svc.cluster.local."])
    assert {s.split()[2] for s in srv} == {"5432"}
    lookup = sh("ip", "netns", "exec", ns, "nslookup", "db").stdout
    assert sorted(line.split()[-1] for line in lookup.splitlines()
                  if line.startswith("Address:") and "#" not in line) == sorted(HEADLESS)


def test_pod_records_and_nxdomain(dnslab):
    ns = dnslab["default"]
    assert short(ns, "10-244-1-11.shop.pod.cluster.local") == [SHOP_IP]
    assert short(ns, "10-244-1-12.default.pod.cluster.local") == [DEFAULT_IP]
    assert short(ns, "10-244-1-10.kube-system.pod.cluster.local") == [DNS_IP]
    # any address of the pod range, as CoreDNS's "pods insecure"
    assert short(ns, "10-244-7-99.shop.pod.cluster.local") == ["10.244.7.99"]
    # a known pod's reverse names its own namespace
    assert short(ns, "-x", SHOP_IP) == ["10-244-1-11.shop.pod.cluster.local."]
    assert short(ns, "-x", DEFAULT_IP) == ["10-244-1-12.default.pod.cluster.local."]
    for name in ("nope.shop.svc.cluster.local", "web.default.svc.cluster.local",
                 "10-244-1-11.nons.pod.cluster.local", "nothing.cluster.local", "web."):
        assert status(ns, name) == "NXDOMAIN", name
    assert status(ns, "-x", "10.96.0.99") == "NXDOMAIN"
    # the unready endpoint is not published
    assert "10.244.1.23" not in short(ns, "db.shop.svc.cluster.local")


def test_tcp(dnslab):
    ns = dnslab["shop"]
    out = dig(ns, "+tcp", "web.shop.svc.cluster.local")
    assert "(TCP)" in out and "ANSWER: 1," in out and "10.96.0.20" in out
    assert short(ns, "+tcp", "db.shop.svc.cluster.local") == sorted(HEADLESS)
    assert short(ns, "+tcp", "+search", "web") == ["10.96.0.20"]
    assert status(dnslab["default"], "+tcp", "+search", "web") == "NXDOMAIN"


def test_queries_reach_dnsmasq(dnslab):
    """The answers came from this dnsmasq: its query log names the client."""
    dig(dnslab["shop"], "web.shop.svc.cluster.local")
    log = dnslab["files"].log.read_text()
    assert f"query[A] web.shop.svc.cluster.local from {SHOP_IP}" in log


def test_node_resolver(dnslab):
    """A node (and a dnsPolicy Default or hostNetwork pod) asks the cluster DNS with no namespace
    in its search path: namespace-qualified names resolve, bare Service names do not."""
    node = dnslab["node"]
    assert short(node, "+search", "web.shop") == ["10.96.0.20"]
    assert short(node, "+search", "web.shop.svc.cluster.local") == ["10.96.0.20"]
    assert status(node, "+search", "web") == "NXDOMAIN"
    out = sh("ip", "netns", "exec", node, "nslookup", "web.shop").stdout
    assert "Address: 10.96.0.20" in out and "web.shop.svc.cluster.local" in out
    found = sh("ip", "netns", "exec", node, "getent", "hosts", "kube-dns.kube-system").stdout
    assert found.split()[0] == "10.96.0.10"


def test_records_follow_a_scale_after_restart(dnslab):
    """db scaled to 4: the new config is read on restart, not on SIGHUP (which rereads only
    dnsmasq's hosts files), so netlab restarts the server when records change."""
    ns, server = dnslab["shop"], dnslab["server"]
    new_ep = "10.244.1.24"
    scaled = [s if s.name != "db" else cd.Service(
        "db", "shop", ports=s.ports, endpoints=[*s.endpoints, cd.Endpoint(new_ep)])
        for s in SERVICES]
    deleted = [s for s in scaled if s.name != "web"]
    server.write(deleted, PODS)
    os.kill(server.procs[-1].pid, signal.SIGHUP)  # `ip netns exec` execs: this is dnsmasq
    for _ in range(200):  # dnsmasq logs "cleared cache" once it has handled the SIGHUP
        if "cleared cache" in dnslab["files"].log.read_text():
            break
        time.sleep(0.05)
    assert "cleared cache" in dnslab["files"].log.read_text()
    assert short(ns, "db.shop.svc.cluster.local") == sorted(HEADLESS)  # SIGHUP: unchanged
    server.stop()
    server.start()
    assert short(ns, "db.shop.svc.cluster.local") == sorted([*HEADLESS, new_ep])
    assert short(ns, "-x", new_ep) == ["10-244-1-24.db.shop.svc.cluster.local."]
    assert len(short(ns, "SRV", "_pg._tcp.db.shop.svc.cluster.local")) == 4
    assert status(ns, "web.shop.svc.cluster.local") == "NXDOMAIN"  # the deleted Service
    assert status(ns, "-x", "10.96.0.20") == "NXDOMAIN"


def test_answers_through_a_dnat_to_the_service_ip(dnslab):
    """The lab puts the server behind 10.96.0.10 with kube-proxy's DNAT. Here a stand-in DNAT in
    the client's own output path (nft, in the client's namespace) shows dnsmasq's bind-interfaces
    socket answers such traffic and conntrack un-NATs the reply: the client sees 10.96.0.10."""
    ns = dnslab["shop"]
    sh("ip", "-n", ns, "route", "add", "10.96.0.0/12", "dev", "eth0")
    rules = ("table ip tdns {\n chain out {\n  type nat hook output priority -100;\n"
             f"  ip daddr 10.96.0.10 udp dport 53 dnat to {DNS_IP}\n"
             f"  ip daddr 10.96.0.10 tcp dport 53 dnat to {DNS_IP}\n }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True,
                   check=True, timeout=30)
    cd.write_netns_resolv(ns, cd.resolv_conf("shop"))
    out = dig(ns, "+search", "web")
    assert "SERVER: 10.96.0.10#53" in out and "10.96.0.20" in out
    assert "SERVER: 10.96.0.10#53(10.96.0.10) (TCP)" in dig(ns, "+tcp", "+search", "web")
    lookup = sh("ip", "netns", "exec", ns, "nslookup", "web").stdout
    assert "Server:\t\t10.96.0.10" in lookup and "Address: 10.96.0.20" in lookup
