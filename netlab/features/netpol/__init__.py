"""NetworkPolicy, one feature: the scenario's `networkPolicies:` (networking.k8s.io/v1's shape),
checked against the lab's pods and namespaces, enforced by nftables in every node's namespace
(`table inet netlab-netpol`, Calico-like per-pod chains, see nft.py) and proven by verify's rule
`policy` (every pair of pods on every port a policy names, TCP and UDP, against the model).

The parts, each a module of this package:
- specs.py: the specs, Kubernetes' defaults, `check()`; the cluster types (Pod, Namespace);
- model.py: the evaluator `verdict()` and the truth table `matrix()` / `render_matrix()`;
- nft.py: the ruleset of one node, `without_rule()`;
- verify.py: the `policy` rule, its batched probe, what policies change in other rules' checks
  (`refine`), and the observed truth table;
- faults.py: the break-it fault policy-blocks-dns (a default-deny egress that forgets DNS);
- connect.py: the probe process that runs inside a pod (standard library only).

What the lab gives it: pods with namespace, labels, named ports, IP and node (hostNetwork pods
are their node and are never selected); namespaces with labels (lab.kube_namespaces, which carry
kubernetes.io/metadata.name); every node's name, namespace and IP. A lab without policies gets
nothing from this feature: no operation, no check.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ...core.feature import Feature, Needs, NotOnHost
from ...core.lab import Lab
from ...core.ops import NftApply, Sysctl
from ...core.schema import Build
from .model import Matrix, egress_verdict, matrix, render_matrix, verdict
from .nft import node_rulesets, ruleset, without_rule
from .specs import (NS_LABEL, TABLE, ContainerPort, Namespace, NetworkPolicy, Pod, check,
                    parse_policies)

__all__ = ["NetworkPolicies", "cluster", "rulesets", "Matrix", "matrix", "render_matrix",
           "verdict", "egress_verdict", "ruleset", "node_rulesets", "without_rule",
           "parse_policies", "check", "NetworkPolicy", "Pod", "Namespace", "ContainerPort", "TABLE",
           "NS_LABEL"]

BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"   # the one Services sets (services.BRIDGE_NF)


def cluster(lab: Lab) -> tuple[list[Namespace], list[Pod], dict[str, str]]:
    """The lab as the policy model sees it: namespaces, pods (hostNetwork ones left out: they
    are their node), node name -> node IP."""
    nss = [Namespace(n.name, dict(n.labels)) for n in lab.kube_namespaces]
    pods = [Pod(p.name, p.namespace, p.ip, p.node, dict(p.labels),
                tuple(ContainerPort(cp.name, cp.port, cp.protocol) for cp in p.ports if cp.name))
            for p in lab.pods if not p.host_network]
    return nss, pods, {n.name: n.ip for n in lab.nodes}


def rulesets(lab: Lab) -> dict[str, str]:
    """Every node's `table inet netlab-netpol` (also nodes without pods now: a pod may come)."""
    nss, pods, nodes = cluster(lab)
    return {n.name: ruleset(n.name, [p for p in pods if p.node == n.name], pods, nss,
                            lab.network_policies, nodes) for n in lab.nodes}


class NetworkPolicies(Feature):
    name = "netpol"
    schema = {"networkPolicies": (list[dict[str, Any]], [])}

    def build(self, spec: Any, b: Build) -> None:
        b.parts["network_policies"] = _build(spec.networkPolicies, b)

    def ops(self, lab: Lab, phase: str) -> list:
        if not lab.network_policies:
            return []
        if phase == "links":
            # Same-node pod to pod is bridged by cni0: it reaches the forward hook only through
            # bridge netfilter. Services sets the same sysctl (unless masqueradeAll): one op.
            kp = getattr(lab, "kube_proxy", None)
            if lab.services and kp is not None and not kp.masquerade_all:
                return []
            return [Sysctl(n.ns, BRIDGE_NF, "1") for n in lab.nodes]
        if phase == "routes":
            return self.reload(lab)
        return []

    def reload(self, lab: Lab) -> list:
        """After pods came or went (runtime.scale): every node's table again, one transaction."""
        if not lab.network_policies:
            return []
        return [NftApply(lab.node(name).ns, text) for name, text in rulesets(lab).items()]

    def node_ops(self, lab: Lab, node: Any, underlay: str, phase: str) -> list:
        if lab.network_policies and phase == "links":
            raise NotOnHost("NetworkPolicies are not built on a real host: their table would "
                            "change the host's own nftables")
        return []

    def rules(self) -> dict:
        from . import verify
        return {"policy": verify.rule_policy}

    def probes(self) -> dict:
        from . import verify
        return {verify.METHOD: verify.Probe()}

    def refine(self, lab: Lab, checks: list) -> list:
        from . import verify
        return verify.refine(lab, checks)

    def faults(self) -> list:
        from . import faults
        return faults.FAULTS

    def needs(self, lab: Lab) -> Needs:
        if not lab.network_policies:
            return Needs()
        from ..services import bridge_netfilter_problem
        return Needs(tools=["nft"], checks=[bridge_netfilter_problem])

    def show(self, lab: Lab, status: Any) -> dict:
        if not lab.network_policies:
            return {}
        return {"networkPolicies": [{"namespace": p.namespace, "name": p.name,
                                     "policyTypes": list(p.types)}
                                    for p in lab.network_policies]}

    def render(self, data: dict) -> list[Any]:
        pols = data.get("networkPolicies")
        if not pols:
            return []
        rows = [(p["namespace"], p["name"], ",".join(p["policyTypes"])) for p in pols]
        return ["", (("NAMESPACE", "NETWORKPOLICY", "POLICY-TYPES"), rows)]


def _build(items: list, b: Build) -> tuple[NetworkPolicy, ...]:
    """Each policy parsed where it is written (errors at its line), then checked against the
    lab: its namespace declared, named ports some pod declares, no name twice."""
    where = b.where
    out: list[NetworkPolicy] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        loc: tuple = ("networkPolicies", i)
        full = isinstance(item, dict) and "spec" in item
        try:
            [pol] = parse_policies([item])
        except ValidationError as e:
            err = e.errors()[0]
            path = tuple(err["loc"])
            if full:     # the full object's spec fields are under spec:, the name under metadata
                path = (("metadata",) if path and path[0] in ("name", "namespace") else
                        ("spec",)) + path
            where.fail(loc + path, f"networkPolicies[{i}]: {_field(path)}: "
                                   f"{err['msg'].removeprefix('Value error, ')}")
        except TypeError as e:
            where.fail(loc, f"networkPolicies[{i}]: {e}")
        meta = ("metadata",) if full else ()
        if pol.id in seen:
            where.fail(loc + meta + ("name",), f"networkPolicy {pol.id} is defined twice (line "
                       f"{where.line(('networkPolicies', seen[pol.id]))}): rename one")
        seen[pol.id] = i
        out.append(pol)
    if not out:
        return ()
    pods = [p for p in b.fields["pods"] if not p.host_network]
    known_ns = [n.name for n in b.parts["kube_namespaces"]]
    declared = {(cp.name, cp.protocol) for p in pods for cp in p.ports if cp.name}
    for i, pol in enumerate(out):
        loc = ("networkPolicies", i)
        meta = ("metadata",) if "spec" in items[i] else ()
        spec = ("spec",) if meta else ()
        if pol.namespace not in known_ns:
            where.fail(loc + meta + ("namespace",),
                       f"networkPolicy {pol.id}: namespace '{pol.namespace}' is not declared: "
                       f"add it to `namespaces:` (declared: {', '.join(known_ns)})")
        for kind, rules in (("ingress", pol.ingress), ("egress", pol.egress)):
            for j, rule in enumerate(rules):
                for k, pp in enumerate(rule.ports or ()):
                    if isinstance(pp.port, str) and (pp.port, pp.protocol) not in declared:
                        names = sorted({n for n, proto in declared if proto == pp.protocol})
                        hint = f"one of {', '.join(names)}" if names else "a port number"
                        where.fail(loc + spec + (kind, j, "ports", k, "port"),
                                   f"networkPolicy {pol.id} {kind} rule {j + 1}: no pod declares "
                                   f"a {pp.protocol} port named '{pp.port}': use {hint}, or name "
                                   f"a container port so")
    return tuple(out)


def _field(path: tuple) -> str:
    return ".".join(str(p) for p in path if p != "spec") or "policy"
