"""The cluster DNS's faults of the break-it exercises (core.fault):

- resolv-no-search: a pod's resolv.conf without its search line, so short names (`web`,
  `web.shop`, `kube-dns.kube-system`) are asked as they are and do not resolve, while full names
  still do;
- kube-dns-down: the cluster DNS server (dnsmasq in the pod kube-system/coredns-...) stopped, so
  every query to the kube-dns Service goes unanswered; undone by starting it as `up` does.
"""

from __future__ import annotations

from ...core.fault import Broken, Fault
from ...core.lab import Lab
from ...core.ops import EtcNetnsFile, Spawn, Stop, argv_of
from .rules import ETC, METHOD, NXDOMAIN


def _clusterfirst(lab: Lab) -> list:
    """The pods with a resolv.conf of their own that asks the cluster DNS with a search path."""
    from . import policy
    return [p for p in lab.pods if not p.host_network and p.name != lab.dns.pod
            and policy(lab, p) == "ClusterFirst"]


class ResolvNoSearch(Fault):
    name = "resolv-no-search"
    summary = "a pod's resolv.conf lost its search line: short Service names no longer resolve"
    on = "pod"
    lesson = "DNS"

    def targets(self, lab: Lab) -> list[str]:
        if getattr(lab, "dns", None) is None:
            return []
        return [p.name for p in _clusterfirst(lab)]

    def make(self, lab: Lab, target: str) -> Broken:
        from . import resolv_of
        pod = lab.pod(target)
        text = resolv_of(lab, pod)
        without = "".join(line for line in text.splitlines(keepends=True)
                          if not line.split()[:1] == ["search"])
        path = f"{ETC}/{pod.ns}/resolv.conf"
        return Broken((EtcNetnsFile(pod.ns, "resolv.conf", without),),
                      (EtcNetnsFile(pod.ns, "resolv.conf", text),), pod.ns, path,
                      f"cat {path}", EtcNetnsFile(pod.ns, "resolv.conf", text).ip())

    def breaks(self, lab: Lab, target: str, check) -> bool:
        """A query from the pod for a name the search path had to complete: with no search list,
        dig asks it as it is, and only a full name (ending in the cluster domain) exists."""
        if check.method != METHOD or check.ns != lab.pod(target).ns:
            return False
        qtype, want, absolute = check.data[:3]
        name = check.target.rstrip(".")
        return (not absolute and qtype != "PTR" and want != NXDOMAIN
                and not name.endswith("." + lab.dns.domain))


class KubeDnsDown(Fault):
    name = "kube-dns-down"
    summary = "the cluster DNS server is down: dnsmasq of the kube-dns pod stopped, no name resolves"
    on = "pod"
    lesson = "DNS"

    def targets(self, lab: Lab) -> list[str]:
        return [] if getattr(lab, "dns", None) is None else [lab.dns.pod]

    def make(self, lab: Lab, target: str) -> Broken:
        pod = lab.pod(target)
        c = pod.containers[0]
        start = Spawn(pod.ns, pod.name, c.name, argv_of(c))   # as the pods feature plans it
        return Broken((Stop.of(start),), (start,), pod.ns, "dnsmasq",
                      f"ip netns exec {pod.ns} ss -lunp", start.ip())

    def breaks(self, lab: Lab, target: str, check) -> bool:
        """Every check that needs the DNS pod's server: each dig, from any pod or node, asks the
        kube-dns Service, whose one endpoint is that pod. Pings to the pod, and its own requests
        as a client, do not need it."""
        server = getattr(check, "server", None)
        return server is not None and server.ns == lab.pod(target).ns


FAULTS = [ResolvNoSearch(), KubeDnsDown()]
