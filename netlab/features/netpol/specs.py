"""NetworkPolicy's specs (networking.k8s.io/v1's shape, pydantic, extra fields forbidden) with
Kubernetes' defaults, the cluster they act on (pods with namespace, labels and named ports;
namespaces with labels), and `check()` of the policies against that cluster. Pure.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NS_LABEL = "kubernetes.io/metadata.name"
TABLE = "netlab-netpol"
Protocol = Literal["TCP", "UDP", "SCTP"]
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # IANA_SVC_NAME


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------------------------------------
# specs

class LabelSelectorRequirement(_Spec):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self):
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"matchExpressions {self.key!r}: operator {self.operator} needs "
                             f"a non-empty `values` list")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"matchExpressions {self.key!r}: operator {self.operator} takes "
                             f"no `values`; remove them")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


class LabelSelector(_Spec):
    """Empty selects everything; all of matchLabels and matchExpressions must hold (AND)."""
    matchLabels: dict[str, str] = {}
    matchExpressions: tuple[LabelSelectorRequirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        return (all(labels.get(k) == v for k, v in self.matchLabels.items())
                and all(e.matches(labels) for e in self.matchExpressions))


class IPBlock(_Spec):
    cidr: str
    except_: tuple[str, ...] = Field(default=(), alias="except")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            ipaddress.ip_network(v, strict=True)
        except ValueError as e:
            raise ValueError(f"ipBlock cidr {v!r} is not a network in CIDR form "
                             f"(like 10.0.0.0/16, host bits zero): {e}") from None
        return v

    @model_validator(mode="after")
    def _except_inside(self):
        net = ipaddress.ip_network(self.cidr)
        for ex in self.except_:
            try:
                exn = ipaddress.ip_network(ex, strict=True)
            except ValueError as e:
                raise ValueError(f"ipBlock except {ex!r} is not a network in CIDR form: {e}") \
                    from None
            if exn.version != net.version or not exn.subnet_of(net) or exn == net:
                raise ValueError(f"ipBlock except {ex!r} must be a strict subnet of cidr "
                                 f"{self.cidr!r}")
        return self

    def matches(self, ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        if a.version != ipaddress.ip_network(self.cidr).version:
            return False
        return (a in ipaddress.ip_network(self.cidr)
                and not any(a in ipaddress.ip_network(e) for e in self.except_))

    def networks(self) -> list[ipaddress.IPv4Network]:
        """cidr minus every except, as a list of networks (nft interval sets cannot subtract)."""
        nets = [ipaddress.ip_network(self.cidr)]
        for ex in map(ipaddress.ip_network, self.except_):
            nets = [piece for n in nets
                    for piece in ((n.address_exclude(ex)) if ex.subnet_of(n) else
                                  ([] if n.subnet_of(ex) else [n]))]
        return nets


class Peer(_Spec):
    podSelector: Optional[LabelSelector] = None
    namespaceSelector: Optional[LabelSelector] = None
    ipBlock: Optional[IPBlock] = None

    @model_validator(mode="after")
    def _one_kind(self):
        selector = self.podSelector is not None or self.namespaceSelector is not None
        if self.ipBlock is not None and selector:
            raise ValueError("a peer has either ipBlock or podSelector/namespaceSelector, not "
                             "both; write them as two peers (which means OR)")
        if self.ipBlock is None and not selector:
            raise ValueError("a peer must set podSelector, namespaceSelector or ipBlock; to "
                             "allow every source, leave out `from`/`to` instead")
        return self


class PolicyPort(_Spec):
    protocol: Protocol = "TCP"
    port: Optional[Union[int, str]] = None
    endPort: Optional[int] = None

    @field_validator("port")
    @classmethod
    def _port(cls, v):
        if isinstance(v, bool):
            raise ValueError("port must be a number or a port name")
        if isinstance(v, int) and not 1 <= v <= 65535:
            raise ValueError(f"port {v} is not in 1-65535")
        if isinstance(v, str) and (len(v) > 15 or not _PORT_NAME.match(v)):
            raise ValueError(f"port name {v!r} is not a valid port name (lowercase letters, "
                             f"digits and '-', at most 15, at least one letter)")
        return v

    @model_validator(mode="after")
    def _end_port(self):
        if self.endPort is None:
            return self
        if self.port is None:
            raise ValueError("endPort needs port: the range is port..endPort")
        if isinstance(self.port, str):
            raise ValueError(f"endPort cannot go with a named port ({self.port!r}); use a number")
        if not self.port <= self.endPort <= 65535:
            raise ValueError(f"endPort {self.endPort} must be >= port {self.port} and <= 65535")
        return self


class IngressRule(_Spec):
    from_: Optional[tuple[Peer, ...]] = Field(default=None, alias="from")
    ports: Optional[tuple[PolicyPort, ...]] = None

    @property
    def peers(self) -> tuple[Peer, ...]:
        return self.from_ or ()


class EgressRule(_Spec):
    to: Optional[tuple[Peer, ...]] = None
    ports: Optional[tuple[PolicyPort, ...]] = None

    @property
    def peers(self) -> tuple[Peer, ...]:
        return self.to or ()


class NetworkPolicy(_Spec):
    """One NetworkPolicy, flattened: metadata's name and namespace next to the spec's fields."""
    name: str
    namespace: str = "default"
    podSelector: LabelSelector = LabelSelector()
    policyTypes: Optional[tuple[Literal["Ingress", "Egress"], ...]] = None
    ingress: tuple[IngressRule, ...] = ()
    egress: tuple[EgressRule, ...] = ()

    @field_validator("name", "namespace")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        # also what keeps the nft set and chain names built from them unambiguous
        if len(v) > 63 or not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a DNS label (lowercase letters, digits and '-', "
                             f"at most 63, starting and ending with a letter or digit)")
        return v

    @property
    def types(self) -> tuple[str, ...]:
        """policyTypes as Kubernetes defaults it."""
        if self.policyTypes is not None:
            return self.policyTypes
        return ("Ingress", "Egress") if self.egress else ("Ingress",)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_policies(items: list[dict]) -> tuple[NetworkPolicy, ...]:
    """The `networkPolicies:` list of a scenario; accepts the flat shape or the full object
    (`metadata: {name, namespace}`, `spec: {...}`) as kubectl writes it."""
    out = []
    for it in items:
        if isinstance(it, dict) and "spec" in it:
            it = {**it.get("metadata", {}), **it["spec"]}
        out.append(NetworkPolicy.model_validate(it))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# the cluster the policies act on (what the lab model must give)

@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    ip: str
    node: str
    labels: dict = field(default_factory=dict, hash=False)
    ports: tuple[ContainerPort, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: str) -> Optional[int]:
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: dict = field(default_factory=dict, hash=False)

    @property
    def all_labels(self) -> dict[str, str]:
        """Its labels plus kubernetes.io/metadata.name, which the API server always sets."""
        return {**self.labels, NS_LABEL: self.name}


def check(policies, namespaces, pods) -> list[str]:
    """Errors a scenario must not be built with: unknown namespace, named ports no pod has."""
    errors = []
    ns_names = {n.name for n in namespaces}
    declared = {(p.name, p.protocol) for pod in pods for p in pod.ports}
    for pol in policies:
        if pol.namespace not in ns_names:
            errors.append(f"networkPolicy {pol.id}: namespace {pol.namespace!r} is not defined")
        for kind, rules in (("ingress", pol.ingress), ("egress", pol.egress)):
            for i, rule in enumerate(rules, 1):
                for pp in rule.ports or ():
                    if isinstance(pp.port, str) and (pp.port, pp.protocol) not in declared:
                        errors.append(f"networkPolicy {pol.id} {kind} rule {i}: no pod declares "
                                      f"a {pp.protocol} port named {pp.port!r}; name a "
                                      f"container port so or use its number")
    return errors
