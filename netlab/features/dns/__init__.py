"""Cluster DNS, as a cluster has it: a real DNS server (Debian's dnsmasq, configured statically
from the lab) in the pod `kube-system/coredns-<hash>-<suffix>` behind the Service
`kube-system/kube-dns` at the 10th address of the serviceCIDR (10.96.0.10), reached through
kube-proxy's rules like any Service; Kubernetes' record schema (model.py here, pure);
each pod's and node's own resolv.conf in /etc/netns/<ns>/.

`dns: true` turns it on; it is on by default when the scenario has Services. The DNS pod takes
the highest free address of the first node's pod subnet (pods are given addresses from the
bottom, so a replica `scale` adds never takes it). dnsmasq.conf and the Corefile kubeadm's
CoreDNS would run with are in the lab's state (`<state>/dns/`). Records follow `scale` and
`delete`: dnsmasq.conf is rewritten and dnsmasq restarted (it rereads --conf-file only at start;
runtime/dnsserver.py).

Pods get kubelet's ClusterFirst file (search <ns>.svc.cluster.local svc.cluster.local
cluster.local, ndots:5); nodes, `dnsPolicy: Default` pods and the DNS pod itself get the node's
(search svc.cluster.local cluster.local, ndots:2). hostNetwork pods share their node's
namespace and so its file. Verify rules: dns/rules.py.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Optional

from . import model as cd
from ...core.feature import Feature, Needs, NotOnHost
from ...core.lab import Container, ContainerPort, Lab, Pod, ifname_for, state_dir
from ...core.ops import EtcNetnsFile, WriteFile
from ...core.schema import Build
from .. import deployments as D
from ..services import SERVICE_CIDR, ServicePortSpec, ServiceSpec, endpoints

NAMESPACE = "kube-system"
SERVICE = "kube-dns"
LABELS = (("k8s-app", "kube-dns"),)
DNSMASQ = "/usr/sbin/dnsmasq"


@dataclass(frozen=True)
class ClusterDns:
    """The lab's DNS: its Service address, zone, the DNS pod, and its files in the lab's state."""
    service_ip: str
    domain: str
    pod: str                  # the DNS pod's name (in lab.pods)
    conf: str                 # dnsmasq.conf
    corefile: str             # the Corefile CoreDNS would run with (for comparison)
    policies: tuple[tuple[str, str], ...] = ()   # pod -> dnsPolicy, where not ClusterFirst

    @property
    def key(self) -> str:
        return f"{NAMESPACE}/{SERVICE}"

    def files(self) -> cd.DnsmasqFiles:
        return cd.DnsmasqFiles(os.path.dirname(self.conf))


def enabled(spec: Any) -> bool:
    return spec.dns if spec.dns is not None else bool(spec.services)


class Dns(Feature):
    name = "dns"
    schema = {"dns": (Optional[bool], None)}

    def build(self, spec: Any, b: Build) -> None:
        if not enabled(spec):
            b.parts["dns"] = None
            return
        nodes, pods = b.fields["nodes"], b.fields["pods"]
        node = nodes[0]
        try:
            service_ip = cd.dns_service_ip(spec.network.serviceCIDR)
        except (ValueError, IndexError):
            service_ip = cd.dns_service_ip(SERVICE_CIDR)   # services reports the bad range
        for i, s in enumerate(spec.services):
            if s.clusterIP == service_ip:
                b.where.fail(("services", i, "clusterIP"),
                             f"service '{s.namespace}/{s.name}': clusterIP {service_ip} is the "
                             f"cluster DNS's (kube-system/kube-dns): pick another, or `dns: false`")
        taken = {p.ip for p in pods}
        hosts = list(ipaddress.IPv4Network(node.pod_cidr).hosts())[1:]   # the first is cni0's
        ip = next((str(h) for h in reversed(hosts) if str(h) not in taken), None)
        if ip is None:
            b.where.fail(("dns",), f"node '{node.name}''s podCIDR {node.pod_cidr} has no address "
                                   f"left for the DNS pod: use a larger podCIDR")
        h = D.template_hash(dict(LABELS), [])
        name = D.replica_name("coredns", NAMESPACE, h, 0)
        b.claim(name, ("dns",))
        veth = ifname_for(name, "veth-")
        b.scratch["veths"][node.name].add(veth)
        files = cd.DnsmasqFiles(os.path.join(state_dir(b.lab), "dns"))
        pod = Pod(name=name, ns=f"{b.lab}-{name}", node=node.name, ip=ip, host_veth=veth,
                  containers=(Container("coredns", tuple(cd.dnsmasq_argv(files, DNSMASQ)),
                                        None, None),),
                  mtu=b.fields["mtu"], namespace=NAMESPACE,
                  labels=LABELS + (("pod-template-hash", h),),
                  ports=(ContainerPort(53, "dns", "UDP"), ContainerPort(53, "dns-tcp", "TCP")))
        b.fields["pods"] = tuple(pods) + (pod,)
        b.namespaces.append(pod.ns)
        b.scratch.setdefault("extra_services", []).append(ServiceSpec(
            name=SERVICE, namespace=NAMESPACE, clusterIP=service_ip, selector=dict(LABELS),
            ports=[ServicePortSpec(name="dns", port=53, targetPort=53, protocol="UDP"),
                   ServicePortSpec(name="dns-tcp", port=53, targetPort=53, protocol="TCP")]))
        policies = tuple((p.name, p.dnsPolicy) for p in spec.pods if p.dnsPolicy != "ClusterFirst")
        b.parts["dns"] = ClusterDns(service_ip, cd.DEFAULT_DOMAIN, name, str(files.conf),
                                    os.path.join(state_dir(b.lab), "dns", "Corefile"), policies)

    def ops(self, lab: Lab, phase: str) -> list:
        d = lab.dns
        if d is None or phase != "links":
            return []
        # Before the processes phase: dnsmasq reads its config at start, and every process sees
        # its namespace's /etc/netns files as it starts.
        return [WriteFile(d.conf, dnsmasq_conf(lab)), WriteFile(d.corefile, corefile(lab))] + \
            resolv_ops(lab)

    def node_ops(self, lab: Lab, node: Any, underlay: str, phase: str) -> list:
        if lab.dns is not None and phase == "links":
            raise NotOnHost("cluster DNS is not built on a real host yet (it needs Services): "
                            "add `dns: false`")
        return []

    def rules(self) -> dict:
        from . import rules
        return rules.RULES

    def faults(self) -> list:
        from . import faults
        return faults.FAULTS

    def probes(self) -> dict:
        from . import rules
        return {rules.METHOD: rules.Probe()}

    def needs(self, lab: Lab) -> Needs:
        if lab.dns is None:
            return Needs()
        return Needs(tools=["dnsmasq"])

    def show(self, lab: Lab, status: Any) -> dict:
        d = lab.dns
        if d is None:
            return {}
        pod = lab.pod(d.pod)
        return {"dns": {"service": d.key, "clusterIP": d.service_ip, "pod": pod.name,
                        "podIP": pod.ip, "node": pod.node, "domain": d.domain,
                        "dnsmasqConf": d.conf, "corefile": d.corefile,
                        "records": len(records(lab))}}

    def render(self, data: dict) -> list[Any]:
        d = data.get("dns")
        if not d:
            return []
        return ["", f"Cluster DNS: Service {d['service']} at {d['clusterIP']} (UDP and TCP 53) -> "
                    f"dnsmasq in pod {d['pod']} ({d['podIP']} on {d['node']}), zone {d['domain']}, "
                    f"{d['records']} records (`netlab get dns`)",
                f"  dnsmasq.conf: {d['dnsmasqConf']}",
                f"  Corefile (what CoreDNS would run, for comparison): {d['corefile']}"]


# ---------------------------------------------------------------- the files, from the lab


def _services(lab: Lab) -> list[cd.Service]:
    out = []
    for s in lab.services:
        eps = []
        if s.headless:
            seen: dict[str, cd.Endpoint] = {}
            for e in endpoints(s, lab.pods):
                seen.setdefault(e.ip, cd.Endpoint(e.ip, pod=e.pod, ready=e.ready))
            eps = list(seen.values())
        out.append(cd.Service(s.name, s.namespace, s.type, s.cluster_ip,
                              tuple(cd.Port(p.port, p.name, p.protocol) for p in s.ports),
                              endpoints=tuple(eps)))
    return out


def _pods(lab: Lab) -> list[cd.Pod]:
    return [cd.Pod(p.name, p.namespace, p.ip) for p in lab.pods if not p.host_network]


def records(lab: Lab) -> list[cd.Record]:
    """Every record the lab's DNS serves now (its Services and pods)."""
    return cd.records(_services(lab), _pods(lab), lab.dns.domain)


def dnsmasq_conf(lab: Lab) -> str:
    d = lab.dns
    return cd.dnsmasq_conf(records(lab), lab.pod(d.pod).ip, d.files(), d.domain,
                           lab.kube_proxy.service_cidr, [n.pod_cidr for n in lab.nodes],
                           [n.name for n in lab.kube_namespaces])


def corefile(lab: Lab) -> str:
    return cd.corefile(lab.dns.domain, lab.kube_proxy.service_cidr, lab.dns.service_ip)


def policy(lab: Lab, pod: Pod) -> str:
    if pod.name == lab.dns.pod:
        return "Default"     # kubeadm's CoreDNS: it must not ask itself
    return dict(lab.dns.policies).get(pod.name, "ClusterFirst")


def resolv_of(lab: Lab, pod: Pod) -> str:
    d = lab.dns
    return cd.resolv_conf_for(pod.namespace, policy(lab, pod), pod.host_network, d.service_ip,
                              d.domain)


def resolv_ops(lab: Lab) -> list:
    """Each node's and each pod's /etc/netns/<ns>/resolv.conf (hostNetwork pods: their node's)."""
    d = lab.dns
    ops = [EtcNetnsFile(n.ns, "resolv.conf", cd.node_resolv_conf(d.service_ip, d.domain))
           for n in lab.nodes]
    return ops + [EtcNetnsFile(p.ns, "resolv.conf", resolv_of(lab, p))
                  for p in lab.pods if not p.host_network]


def zone(lab: Lab) -> str:
    """The records as a zone, the form `dig` prints (`netlab get dns`)."""
    d = lab.dns
    head = [f"; cluster DNS of lab {lab.name}: Service {d.key} {d.service_ip}, server "
            f"dnsmasq in pod {d.pod} ({lab.pod(d.pod).ip}); pod records "
            f"a-b-c-d.<namespace>.pod.{d.domain} are synthesised for every pod address",
            f"; {d.conf}"]
    return "\n".join(head + [r.zone_line() for r in records(lab)]) + "\n"
