"""netpol's nft rulesets in real namespaces, built by hand with `ip`: the observed reachability
matrix (TCP connects with curl, UDP datagrams with socat) equals the evaluator's.

Two nodes on an underlay bridge, host-gw routes, a cni0 bridge per node with three pods each:
    node1 192.168.1.11  cni0 10.244.1.1/24  x/a x/b y/a
    node2 192.168.1.12  cni0 10.244.2.1/24  x/c y/b z/a
so every table has same-node (bridged) and cross-node (routed) pairs. Each pod runs netexec on
TCP+UDP 80 and 81. Bridge netfilter: cni0 gets `nf_call_iptables 1` and the node namespace's
sysctl bridge-nf-call-iptables is set to 0, so the per-bridge option alone is what makes bridged
pod-to-pod traffic reach the forward hook.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from netlab.netpol import (ContainerPort, Namespace, Pod, matrix, parse_policies,
                           render_matrix, ruleset, verdict, without_rule)
from tests.conftest import ROOT, requires_root

pytestmark = requires_root

NETEXEC = ROOT / "netlab" / "netexec.py"
NODE_IP = {"node1": "192.168.1.11", "node2": "192.168.1.12"}
SUBNET = {"node1": "10.244.1", "node2": "10.244.2"}
PLACES = [("x", "a", "node1"), ("x", "b", "node1"), ("y", "a", "node1"),
          ("x", "c", "node2"), ("y", "b", "node2"), ("z", "a", "node2")]
PORTS = tuple(ContainerPort(f"serve-{p}-{proto.lower()}", p, proto)
              for p in (80, 81) for proto in ("TCP", "UDP"))
NAMESPACES = [Namespace("x", {"team": "blue"}), Namespace("y", {"team": "red"}),
              Namespace("z", {"team": "red"})]
NSL = "kubernetes.io/metadata.name"


def sh(*argv, check=True, input=None, timeout=30):
    r = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr}")
    return r


class Cluster:
    """The hand-built two-node cluster; every namespace name starts with `prefix`."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.netns: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.pods: list[Pod] = []
        self.ns_of: dict[str, str] = {}          # pod id or node name -> netns

    def add_ns(self, name):
        ns = f"{self.prefix}-{name}"
        self.netns.append(ns)                    # recorded before it is made, for clean-up
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def build(self):
        ul = self.add_ns("ul")
        sh("ip", "-n", ul, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", ul, "link", "set", "br0", "up")
        for i, node in enumerate(NODE_IP, 1):
            n = self.add_ns(node)
            self.ns_of[node] = n
            sh("ip", "-n", ul, "link", "add", f"ul-{node}", "type", "veth", "peer", "name",
               "eth0", "netns", n)
            sh("ip", "-n", ul, "link", "set", f"ul-{node}", "master", "br0", "up")
            sh("ip", "-n", n, "addr", "add", NODE_IP[node] + "/24", "dev", "eth0")
            sh("ip", "-n", n, "link", "set", "eth0", "up")
            sh("ip", "-n", n, "link", "add", "cni0", "type", "bridge")
            # bridged pod-to-pod traffic reaches the inet forward hook only with this (or the
            # namespace's sysctl, switched off here so the bridge option alone is proven)
            sh("ip", "-n", n, "link", "set", "cni0", "type", "bridge", "nf_call_iptables", "1")
            sh("ip", "netns", "exec", n, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
            sh("ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            sh("ip", "-n", n, "addr", "add", SUBNET[node] + ".1/24", "dev", "cni0")
            sh("ip", "-n", n, "link", "set", "cni0", "up")
            for other in NODE_IP:
                if other != node:
                    sh("ip", "-n", n, "route", "add", SUBNET[other] + ".0/24", "via",
                       NODE_IP[other])
        host = {node: 10 for node in NODE_IP}
        for ns, name, node in PLACES:
            host[node] += 1
            ip = f"{SUBNET[node]}.{host[node]}"
            p = self.add_ns(f"{ns}-{name}")
            pod = Pod(name, ns, ip, node, {"pod": name}, PORTS)
            self.pods.append(pod)
            self.ns_of[pod.id] = p
            n = self.ns_of[node]
            veth = f"v-{ns}-{name}"
            sh("ip", "-n", n, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
               "netns", p)
            sh("ip", "-n", n, "link", "set", veth, "master", "cni0", "up")
            sh("ip", "-n", p, "addr", "add", ip + "/24", "dev", "eth0")
            sh("ip", "-n", p, "link", "set", "eth0", "up")
            sh("ip", "-n", p, "route", "add", "default", "via", SUBNET[node] + ".1")
            for port in (80, 81):
                self.procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", p, sys.executable, "-I", "-S", str(NETEXEC),
                     "--port", str(port), "--udp-port", str(port), "--name", pod.id],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))
        for pod in self.pods:                     # the node reaches its pods before any policy
            for _ in range(50):
                if self.probe(pod.node, pod, 81, "TCP"):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"server in {pod.id} did not start")

    def load(self, policies):
        for node in NODE_IP:
            text = ruleset(node, [p for p in self.pods if p.node == node], self.pods,
                           NAMESPACES, policies, NODE_IP)
            sh("ip", "netns", "exec", self.ns_of[node], "nft", "-f", "-", input=text)

    def probe(self, src: str, dst: Pod, port: int, proto: str) -> bool:
        """src is a pod id or a node name (then the node's own IP is the source address)."""
        ns = self.ns_of[src]
        bind = NODE_IP.get(src)
        if proto == "TCP":
            argv = ["curl", "-s", "--connect-timeout", "1", "-m", "3"]
            argv += ["--interface", bind] if bind else []
            argv.append(f"http://{dst.ip}:{port}/hostname")
            r = sh("ip", "netns", "exec", ns, *argv, check=False)
        else:
            target = f"UDP:{dst.ip}:{port}" + (f",bind={bind}" if bind else "")
            r = sh("ip", "netns", "exec", ns, "socat", "-t", "1", "-T", "1", "-", target,
                   check=False, input="hostname\n")
        return r.stdout.strip() == dst.id

    def observe(self, port, proto, sources=None) -> dict:
        sources = sources or [p.id for p in self.pods]
        pairs = [(s, d) for s in sources for d in self.pods]
        with ThreadPoolExecutor(48) as pool:
            got = list(pool.map(lambda sd: self.probe(sd[0], sd[1], port, proto), pairs))
            # a busy machine can time out an allowed probe, never make a dropped one answer:
            # probe every unanswered pair once more, whatever the model expects of it
            again = [i for i, ok in enumerate(got) if not ok]
            for i, ok in zip(again, pool.map(
                    lambda i: self.probe(pairs[i][0], pairs[i][1], port, proto), again)):
                got[i] = ok
        return {(s, d.id): ok for (s, d), ok in zip(pairs, got)}

    def teardown(self):
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(timeout=10)
        for ns in reversed(self.netns):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def cluster():
    prefix = f"tnp-{uuid.uuid4().hex[:6]}"
    root_before = sh("nft", "list", "ruleset").stdout
    c = Cluster(prefix)
    try:
        c.build()
        yield c
    finally:
        c.teardown()
    assert sh("nft", "list", "ruleset").stdout == root_before
    assert [n for n in os.listdir("/run/netns") if n.startswith(prefix)] == []
    assert all(p.poll() is not None for p in c.procs)


def assert_observed(c: Cluster, policies, port, proto):
    expected = matrix(policies, NAMESPACES, c.pods, port, proto, NODE_IP)
    observed = c.observe(port, proto)
    if observed != expected.allowed:
        obs = replace(expected, allowed=observed)
        diff = [f"{s} -> {d}: expected {expected.allowed[s, d]} ({expected.reasons[s, d]})"
                for (s, d) in sorted(observed) if observed[s, d] != expected.allowed[s, d]]
        raise AssertionError(f"{proto}/{port} differs from the model:\n"
                             + render_matrix(expected, obs) + "\n".join(diff))
    # the nodes as sources: own node always allowed, the other node only as policies say
    nodes = c.observe(port, proto, sources=list(NODE_IP))
    for (node, dst), ok in nodes.items():
        want, why = verdict(policies, NAMESPACES, c.pods, NODE_IP[node], dst, port, proto,
                            NODE_IP)
        assert ok == want, f"{proto}/{port} {node} -> {dst}: observed {ok}, expected {why}"
    return expected


# Three policy sets, each over TCP and UDP on 80 and 81.
SET_NAMED_PORT = [   # default deny in x; x/a open to namespace y on its named TCP port only
    {"name": "default-deny", "namespace": "x", "podSelector": {}, "ingress": []},
    {"name": "allow-y-web", "namespace": "x", "podSelector": {"matchLabels": {"pod": "a"}},
     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {NSL: "y"}}}],
                  "ports": [{"port": "serve-80-tcp"}]}]},
]
SET_AND_OR_IPBLOCK = [
    # one peer, AND: only red-team pods labelled b reach x/a  (y/b)
    {"name": "and", "namespace": "x", "podSelector": {"matchLabels": {"pod": "a"}},
     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "red"}},
                            "podSelector": {"matchLabels": {"pod": "b"}}}]}]},
    # two peers, OR: any red-team pod, or x's own pods labelled a, reach x/c
    {"name": "or", "namespace": "x", "podSelector": {"matchLabels": {"pod": "c"}},
     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "red"}}},
                           {"podSelector": {"matchLabels": {"pod": "a"}}}]}]},
    # ipBlock with except: y's pods take node2's pod subnet minus z/a, on UDP only
    {"name": "cidr", "namespace": "y", "podSelector": {},
     "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.2.0/24", "except": ["10.244.2.13/32"]}}],
                  "ports": [{"protocol": "UDP"}]}]},
]
SET_EGRESS = [
    # x/a may only talk to namespace y on TCP 80-81 (endPort), and to pods labelled c on UDP
    {"name": "x-a-out", "namespace": "x", "podSelector": {"matchLabels": {"pod": "a"}},
     "policyTypes": ["Egress"],
     "egress": [{"to": [{"namespaceSelector": {"matchLabels": {NSL: "y"}}}],
                 "ports": [{"port": 80, "endPort": 81}]},
                {"to": [{"podSelector": {"matchLabels": {"pod": "c"}}}],
                 "ports": [{"protocol": "UDP"}]}]},
    # z denies everything both ways
    {"name": "deny-all", "namespace": "z", "podSelector": {},
     "policyTypes": ["Ingress", "Egress"]},
    # y/b takes TCP 81 from x/a only (the egress side must allow it too)
    {"name": "b-81", "namespace": "y", "podSelector": {"matchLabels": {"pod": "b"}},
     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {NSL: "x"}},
                            "podSelector": {"matchLabels": {"pod": "a"}}}],
                  "ports": [{"port": 81, "protocol": "TCP"}]}]},
]


@pytest.mark.parametrize("policy_set", [SET_NAMED_PORT, SET_AND_OR_IPBLOCK, SET_EGRESS],
                         ids=["named-port", "and-or-ipblock", "egress"])
def test_observed_matrix_equals_model(cluster, policy_set):
    pols = parse_policies(policy_set)
    cluster.load(pols)
    denied = 0
    for port in (80, 81):
        for proto in ("TCP", "UDP"):
            exp = assert_observed(cluster, pols, port, proto)
            denied += len(exp.denied_pairs())
    assert denied > 0                        # each set denies something, so the probe can fail
    for node in NODE_IP:                     # reloading replaces the table, never stacks it
        cluster.load(pols)
        out = sh("ip", "netns", "exec", cluster.ns_of[node], "nft", "list", "tables").stdout
        assert out.split().count("netlab-netpol") == 1


def test_deleting_one_rule_changes_exactly_its_pairs(cluster):
    pols = parse_policies(SET_NAMED_PORT)
    cluster.load(pols)
    before = assert_observed(cluster, pols, 80, "TCP")
    node1 = cluster.ns_of["node1"]
    listing = sh("ip", "netns", "exec", node1, "nft", "-a", "list", "chain", "inet",
                 "netlab-netpol", "ingress.x.a").stdout
    [line] = [ln for ln in listing.splitlines() if '"x/allow-y-web ingress rule 1"' in ln]
    handle = line.rsplit("# handle ", 1)[1].strip()
    sh("ip", "netns", "exec", node1, "nft", "delete", "rule", "inet", "netlab-netpol",
       "ingress.x.a", "handle", handle)
    # what that rule governed: the pairs into x/a the model allows with it and denies without it
    without = without_rule(pols, "x/allow-y-web", "ingress", 1)
    after_model = matrix(without, NAMESPACES, cluster.pods, 80, "TCP", NODE_IP)
    governed = {(s, d) for (s, d) in before.allowed if d == "x/a"
                and before.allowed[s, d] and not after_model.allowed[s, d]}
    assert governed == {("y/a", "x/a"), ("y/b", "x/a")}
    assert all(before.reasons[k] == "allowed by x/allow-y-web ingress rule 1" for k in governed)
    observed = cluster.observe(80, "TCP")
    changed = {k for k in observed if observed[k] != before.allowed[k]}
    assert changed == governed, render_matrix(before, replace(before, allowed=observed))


def test_same_node_traffic_needs_bridge_netfilter(cluster):
    """Switch cni0's nf_call_iptables off on node1: its bridged pod-to-pod pairs bypass the
    forward hook (and the policy), while routed pairs from node2 are still filtered."""
    pols = parse_policies(SET_NAMED_PORT)
    cluster.load(pols)
    before = assert_observed(cluster, pols, 80, "TCP")
    sh("ip", "-n", cluster.ns_of["node1"], "link", "set", "cni0", "type", "bridge",
       "nf_call_iptables", "0")
    node = {p.id: p.node for p in cluster.pods}
    bridged = {(s, d) for (s, d), ok in before.allowed.items()
               if not ok and node[s] == node[d] == "node1"}
    assert bridged                            # x/b -> x/a and friends were denied
    observed = cluster.observe(80, "TCP")
    changed = {k for k in observed if observed[k] != before.allowed[k]}
    assert changed == bridged


def test_policy_sees_the_pod_ip_after_service_dnat(cluster):
    """A ClusterIP DNAT'd to x/a in every node (priority dstnat, as kube-proxy's nftables mode):
    through the Service, each pod reaches x/a exactly when the model lets it reach x/a's IP."""
    pols = parse_policies(SET_NAMED_PORT)
    cluster.load(pols)
    xa = next(p for p in cluster.pods if p.id == "x/a")
    vip = Pod("a", "x", "10.96.0.10", "none")          # x/a as seen through its ClusterIP
    nat = ("table ip tnp-svc {\n chain prerouting {\n  type nat hook prerouting priority dstnat;\n"
           f"  ip daddr {vip.ip} tcp dport 80 dnat to {xa.ip}:80\n }}\n}}\n")
    for node in NODE_IP:
        sh("ip", "netns", "exec", cluster.ns_of[node], "nft", "-f", "-", input=nat)
    sources = [p.id for p in cluster.pods if p.id != "x/a"]
    with ThreadPoolExecutor(16) as pool:
        got = dict(zip(sources, pool.map(
            lambda s: cluster.probe(s, vip, 80, "TCP"), sources)))
    want = {s: verdict(pols, NAMESPACES, cluster.pods, s, "x/a", 80, "TCP", NODE_IP)[0]
            for s in sources}
    assert got == want
    assert set(want.values()) == {True, False}


def random_policies(seed: int) -> list[dict]:
    """A few policies drawn from every feature (seeded: a failure names its seed)."""
    import random
    rnd = random.Random(seed)

    def selector(kind):
        if kind == "pod":
            if rnd.random() < 0.5:
                return {"matchLabels": {"pod": rnd.choice("abc")}}
            return {"matchExpressions": [{"key": "pod", "operator": rnd.choice(["In", "NotIn"]),
                                          "values": rnd.sample("abc", rnd.randint(1, 2))}]}
        if rnd.random() < 0.5:
            return {"matchLabels": {"team": rnd.choice(["red", "blue"])}}
        return {"matchExpressions": [{"key": NSL, "operator": rnd.choice(["In", "NotIn"]),
                                      "values": rnd.sample("xyz", rnd.randint(1, 2))}]}

    def peer():
        r = rnd.random()
        if r < 0.3:
            return {"podSelector": selector("pod")}
        if r < 0.55:
            return {"namespaceSelector": selector("ns")}
        if r < 0.8:
            return {"podSelector": selector("pod"), "namespaceSelector": selector("ns")}
        node = rnd.choice(list(SUBNET))
        return {"ipBlock": {"cidr": SUBNET[node] + ".0/24",
                            "except": [f"{SUBNET[node]}.{rnd.randint(11, 13)}/32"]}}

    def port():
        r = rnd.random()
        proto = rnd.choice(["TCP", "UDP"])
        if r < 0.3:
            return {"protocol": proto, "port": rnd.choice([80, 81])}
        if r < 0.5:
            return {"protocol": proto, "port": 79, "endPort": rnd.choice([80, 81])}
        if r < 0.75:
            return {"protocol": proto, "port": f"serve-{rnd.choice([80, 81])}-{proto.lower()}"}
        return {"protocol": proto}

    def rule(direction):
        out = {}
        if rnd.random() < 0.8:
            out[direction] = [peer() for _ in range(rnd.randint(1, 2))]
        if rnd.random() < 0.7:
            out["ports"] = [port() for _ in range(rnd.randint(1, 2))]
        return out

    items = []
    for i in range(rnd.randint(3, 5)):
        types = rnd.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
        p = {"name": f"r{i}", "namespace": rnd.choice("xyz"), "policyTypes": types,
             "podSelector": selector("pod") if rnd.random() < 0.6 else {}}
        if "Ingress" in types:
            p["ingress"] = [rule("from") for _ in range(rnd.randint(0, 2))]
        if "Egress" in types:
            p["egress"] = [rule("to") for _ in range(rnd.randint(0, 2))]
        items.append(p)
    return items


def test_random_policy_sets_match_the_model(cluster):
    for seed in (1, 2, 3):
        pols = parse_policies(random_policies(seed))
        cluster.load(pols)
        for port in (80, 81):
            for proto in ("TCP", "UDP"):
                try:
                    assert_observed(cluster, pols, port, proto)
                except AssertionError as e:
                    raise AssertionError(f"seed {seed}: {e}") from None
