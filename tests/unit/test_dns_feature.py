"""The dns feature, pure: what `dns:` adds to a lab (the DNS pod, the kube-dns Service, the files),
its plan, its checks, and the parsing and judging of real dig outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab import model, plan
from netlab.core.errors import ScenarioError
from netlab.core.ops import EtcNetnsFile, Spawn, WriteFile
from netlab.features import dns
from netlab.features.dns import rules as R
from netlab.verify.engine import derive

ROOT = Path(__file__).resolve().parents[2]
DNS_YAML = ROOT / "netlab" / "scenarios" / "dns.yaml"

SMALL = """
name: small
nodes: [{name: node1, ip: 192.168.1.11}]
pods:
  - {name: client, node: node1}
  - {name: web, node: node1, labels: {app: web}, containers: [{name: s, image: netexec}]}
services:
  - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
"""


def lab(text: str = SMALL, name: str = "small"):
    return model.parse(text, "small.yaml", name)


def test_on_by_default_with_services_off_without():
    assert lab().dns is not None
    assert lab(SMALL + "dns: false\n").dns is None
    three = model.load(ROOT / "netlab" / "scenarios" / "three-node.yaml")
    assert three.dns is None and not three.services


def test_the_dns_pod_and_the_kube_dns_service():
    a = lab()
    pod = a.pod(a.dns.pod)
    assert pod.name.startswith("coredns-") and pod.namespace == "kube-system"
    assert dict(pod.labels)["k8s-app"] == "kube-dns"
    assert pod.ip == "10.244.1.254" and pod.node == "node1"   # the top of the subnet: stable
    assert pod.containers[0].argv[0] == "/usr/sbin/dnsmasq"
    assert pod.ns in a.namespaces
    svc = next(s for s in a.services if s.name == "kube-dns")
    assert svc.namespace == "kube-system" and svc.cluster_ip == "10.96.0.10"
    assert [(p.name, p.protocol, p.port) for p in svc.ports] == [("dns", "UDP", 53),
                                                                ("dns-tcp", "TCP", 53)]
    assert a.addon_services == ("kube-system/kube-dns",)


def test_the_10th_address_of_another_service_range():
    a = lab(SMALL + "network: {serviceCIDR: 10.100.0.0/16}\n")
    assert a.dns.service_ip == "10.100.0.10"
    assert "nameserver 10.100.0.10" in dns.resolv_of(a, a.pod("client"))


def test_a_service_may_not_take_the_dns_address():
    text = SMALL.replace("selector: {app: web}", "clusterIP: 10.96.0.10, selector: {app: web}")
    with pytest.raises(ScenarioError, match=r"small.yaml:8: .*clusterIP 10.96.0.10 is the cluster "
                                            r"DNS's"):
        lab(text)


def test_plan_writes_the_files_before_the_processes_and_resolv_conf_of_each_namespace():
    a = model.load(DNS_YAML)
    ops = plan.build(a)
    files = [op for op in ops if isinstance(op, WriteFile)]
    assert [Path(f.path).name for f in files] == ["dnsmasq.conf", "Corefile"]
    etc = [op for op in ops if isinstance(op, EtcNetnsFile)]
    assert {op.ns for op in etc} == {n.ns for n in a.nodes} | {p.ns for p in a.pods}
    first_spawn = next(i for i, op in enumerate(ops) if isinstance(op, Spawn))
    assert max(ops.index(op) for op in files + etc) < first_spawn
    by_ns = {op.ns: op.text for op in etc}
    assert by_ns["dns-client"].startswith("search default.svc.cluster.local svc.cluster.local "
                                          "cluster.local\nnameserver 10.96.0.10\noptions ndots:5")
    assert by_ns["dns-shopper"].startswith("search shop.svc.cluster.local ")
    assert "ndots:2" in by_ns["dns-node1"] and "ndots:2" in by_ns[a.pod(a.dns.pod).ns]
    script = plan.script(a, ops)
    assert "mkdir -p /etc/netns/dns-client && cat > /etc/netns/dns-client/resolv.conf" in script
    assert "/etc/resolv.conf" not in script.replace("forward . /etc/resolv.conf", "")


def test_dns_policy_default_gets_the_nodes_file():
    text = SMALL.replace("{name: client, node: node1}",
                         "{name: client, node: node1, dnsPolicy: Default}")
    a = lab(text)
    assert dns.resolv_of(a, a.pod("client")).startswith("search svc.cluster.local cluster.local")
    assert "client" not in {p.name for p in R.clients(a)}


def test_conf_has_services_headless_endpoints_and_pod_domains():
    a = model.load(DNS_YAML)
    conf = dns.dnsmasq_conf(a)
    assert "listen-address=10.244.1.254" in conf and "local=/#/" in conf
    web = next(s for s in a.services if s.key == "default/web")
    assert f"host-record=web.default.svc.cluster.local,{web.cluster_ip}" in conf
    db = [p for p in a.pods if p.deployment == "db"]
    for p in db:
        assert f"host-record=db.shop.svc.cluster.local,{p.ip}" in conf
    assert "synth-domain=shop.pod.cluster.local,10.244.2.0/24" in conf
    assert "srv-host=_http._tcp.shop.shop.svc.cluster.local" in conf
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in dns.corefile(a)
    assert dns.zone(a).count(" IN A ") >= 5


def test_checks_cover_every_rule_and_short_names_only_in_their_namespace():
    a = model.load(DNS_YAML)
    checks = [c for c in derive(a) if c.method == "dns"]
    assert {c.rule for c in checks} == set(R.RULES)
    client = {(c.target, c.data[1]) for c in checks if c.src == "client"}
    web = next(s for s in a.services if s.key == "default/web").cluster_ip
    assert ("web", (web,)) in client
    assert ("shop", R.NXDOMAIN) in client and ("db", R.NXDOMAIN) in client
    shopper = {c.target for c in checks if c.src == "shopper" and c.rule == "dns-service"}
    assert "web" not in shopper and "web.default" in shopper and "shop" in shopper
    headless = [c for c in checks if c.rule == "dns-headless"]
    assert [c.data[1] for c in headless] == [tuple(sorted(p.ip for p in a.pods
                                                          if p.deployment == "db"))]
    c = next(c for c in checks if c.target == "web" and c.src == "client")
    assert c.reproduce == "ip netns exec dns-client nslookup web"
    # the kube-dns Service is proven by the dns rules, not by the svc ones (dnsmasq is no netexec)
    assert not [c for c in derive(a) if c.method == "svc" and "kube-dns" in c.dst]


def test_no_dns_checks_without_dns():
    a = model.load(ROOT / "netlab" / "scenarios" / "services.yaml")
    assert a.dns is None and not [c for c in derive(a) if c.method == "dns"]


# dig 9.18's real outputs, from a dns.yaml lab
DIG_A = """
; <<>> DiG 9.18.49-1~deb12u3-Debian <<>> +search +time=1 +tries=2 web A
;; global options: +cmd
;; Got answer:
;; WARNING: .local is reserved for Multicast DNS
;; You are currently testing what happens when an mDNS query is leaked to DNS
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 55307
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; QUESTION SECTION:
;web.default.svc.cluster.local.	IN	A

;; ANSWER SECTION:
web.default.svc.cluster.local. 30 IN	A	10.96.0.2

;; Query time: 23 msec
;; SERVER: 10.96.0.10#53(10.96.0.10) (UDP)
;; WHEN: Tue Dec 01 20:57:01 UTC 2026
;; MSG SIZE  rcvd: 74
"""

DIG_SRV = """;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 2
;; ANSWER SECTION:
_http._tcp.shop.shop.svc.cluster.local.	30 IN SRV 0 100 80 shop.shop.svc.cluster.local.

;; ADDITIONAL SECTION:
shop.shop.svc.cluster.local. 30	IN	A	10.96.0.3

;; Query time: 4 msec
;; SERVER: 10.96.0.10#53(10.96.0.10) (UDP)
"""

DIG_REFUSED = """;; communications error to 10.96.0.10#53: connection refused
;; communications error to 10.96.0.10#53: connection refused

; <<>> DiG 9.18.49-1~deb12u3-Debian <<>> +search +time=1 +tries=2 web A
;; global options: +cmd
;; no servers could be reached
"""


def test_parse_dig():
    out = R.parse_dig(DIG_A, "A")
    assert (out.status, out.answers, out.server, out.qname) == \
        ("NOERROR", ["10.96.0.2"], "10.96.0.10", "web.default.svc.cluster.local")
    srv = R.parse_dig(DIG_SRV, "SRV")
    assert srv.answers == ["80 shop.shop.svc.cluster.local."]      # the A of ADDITIONAL is not
    down = R.parse_dig(DIG_REFUSED, "A")
    assert down.status == "" and down.error == "no answer from 10.96.0.10: connection refused"


def _check(target="web", want=("10.96.0.2",), rule="dns-service", ns="dnw-nowhere"):
    return R.DnsCheck(rule, "client", target, R.METHOD, ns, target, 53,
                      data=("A", want, False, "dnw-node", "dnw-dns", "10.96.0.10", "10.244.1.254"))


def test_judge():
    assert R.judge(_check(), R.parse_dig(DIG_A, "A")).ok
    wrong = R.judge(_check(want=("10.96.0.9",)), R.parse_dig(DIG_A, "A"))
    assert not wrong.ok and "missing 10.96.0.9" in wrong.reason
    other = R.judge(_check(), R.parse_dig(DIG_A.replace("SERVER: 10.96.0.10#53(10.96.0.10)",
                                                        "SERVER: 10.244.1.254#53(x)"), "A"))
    assert not other.ok and "answered by 10.244.1.254, not the kube-dns Service" in other.reason
    scope = R.judge(_check(want=R.NXDOMAIN, rule="dns-scope"), R.parse_dig(DIG_A, "A"))
    assert not scope.ok and "must not resolve here" in scope.reason
    nodata = R.DigOut("NOERROR", [], "10.96.0.10")    # a namespace's own node in the zone
    assert R.judge(_check(want=R.NXDOMAIN, rule="dns-scope"), nodata).ok
    # no /etc/netns file for this namespace: the reason says the pod asks the host's resolver
    lost = R.judge(_check(), R.parse_dig(DIG_REFUSED, "A"))
    assert not lost.ok and "/etc/netns/dnw-nowhere/resolv.conf is missing" in lost.reason
