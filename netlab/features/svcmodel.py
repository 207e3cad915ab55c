"""The Services model, pure: a Service with its ports as the lab has it (ClusterIP, nodePorts,
LoadBalancer IP allocated), its endpoints among the lab's pods, kube-proxy's settings. Shared by
the feature (services.py), its verify rules (svcchecks.py, svcprobe.py) and the CLI, so that none
of them imports the other back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union
import ipaddress

from ..core.lab import Pod

AFFINITY_TIMEOUT = 10800            # Kubernetes' default ClientIP affinity: 3 hours
BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: Union[int, str]        # a number, or a container port's name
    protocol: str                       # TCP | UDP
    node_port: Optional[int] = None


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    type: str                                   # ClusterIP | NodePort | LoadBalancer
    cluster_ip: Optional[str]                   # None: headless
    selector: tuple[tuple[str, str], ...]
    ports: tuple[ServicePort, ...]
    external_traffic_policy: str = "Cluster"
    session_affinity: str = "None"
    affinity_timeout: int = AFFINITY_TIMEOUT
    load_balancer_ip: Optional[str] = None
    announced_by: str = ""                      # the node the LB IP's route goes to

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self) -> bool:
        return self.cluster_ip is None


@dataclass(frozen=True)
class Endpoint:
    """One ready address:port behind one port of a Service (an EndpointSlice endpoint)."""
    ip: str
    port: int
    pod: str
    node: str
    ready: bool = True
    port_name: str = ""

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class KubeProxy:
    """The lab's kube-proxy settings: the ranges it works with."""
    service_cidr: str
    cluster_cidr: str                 # the pod CIDR: kube-proxy's --cluster-cidr
    masquerade_all: bool
    pool: Optional[str]


# ---------------------------------------------------------------- endpoints


def matches(selector, labels) -> bool:
    sel, have = dict(selector), dict(labels)
    return bool(sel) and all(have.get(k) == v for k, v in sel.items())


def _target(port: ServicePort, pod: Pod) -> Optional[int]:
    if isinstance(port.target_port, int):
        return port.target_port
    for pp in pod.ports:
        if pp.name == port.target_port and pp.protocol == port.protocol:
            return pp.port
    return None     # this pod has no such named port: not an endpoint (as in Kubernetes)


def endpoints(svc: Service, pods: Sequence[Pod]) -> tuple[Endpoint, ...]:
    """The endpoints of every port of `svc`: the pods of its namespace whose labels contain its
    selector, at the port its targetPort names. Sorted by port, then by IP."""
    chosen = sorted((p for p in pods if p.namespace == svc.namespace
                     and matches(svc.selector, p.labels)),
                    key=lambda p: ipaddress.ip_address(p.ip))
    out = []
    for port in svc.ports:
        for pod in chosen:
            target = _target(port, pod)
            if target is not None:
                out.append(Endpoint(pod.ip, target, pod.name, pod.node, True, port.name))
    return tuple(out)
