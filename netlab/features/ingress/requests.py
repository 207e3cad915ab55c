"""The requests that prove an Ingress and Gateway configuration, and what must answer each
(the routing table's own answer, as nginx would pick it). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .spec import HTTPRouteMatch, IngressConfig, _norm
from .table import Candidate, RoutingTable, attach, route_request

@dataclass(frozen=True)
class Probe:
    """One request verify sends (curl -H 'Host: HOST' http://ADDR:PORT/PATH) and what must answer:
    status (404, 500, 503) or the Services by weight (one Service: weight 1)."""
    port: int
    host: str
    path: str
    headers: tuple[tuple[str, str], ...]
    services: tuple[tuple[str, int], ...]     # ("namespace/name", weight)
    status: Optional[int]
    why: str


def _expect(c: Candidate) -> tuple[tuple[tuple[str, int], ...], Optional[int]]:
    if c.status:
        return (), c.status
    return tuple((f"{b.namespace}/{b.service}", b.weight) for b in c.backends if b.weight > 0), None


def _sample_host(name: Optional[str]) -> str:
    if name is None:
        return "unknown.invalid"
    if name.startswith("~"):          # an Ingress one-label wildcard, as a regex
        return "x" + name[len("~^[^.]+"):-1].replace("\\", "")
    return "x" + name[1:] if name.startswith("*.") else name


def probes(cfg: IngressConfig, table: RoutingTable, listen_port: int = 80) -> list[Probe]:
    """The requests that prove every rule: each path reaches its Service, Prefix matches path
    elements only, Exact only itself, unknown hosts get the default backend or 404, header
    matches win; each expectation is what route_request (nginx's order) says."""
    out: list[Probe] = []

    def probe(port, host, path, headers, why):
        c = route_request(table, port, host, path, dict(headers))
        services, status = _expect(c)
        out.append(Probe(port, host, path, tuple(headers), services, status,
                         f"{why}: {c.source}"))

    for ing in cfg.ingresses:
        for rule in ing.rules:
            host = _sample_host(rule.host) if rule.host else "unknown.invalid"
            for p in rule.http.paths if rule.http else []:
                path = _norm(p.path, p.pathType)
                probe(listen_port, host, path, (), f"{p.pathType} {p.path} reaches its Service")
                sub = path.rstrip("/") + "/x"
                if p.pathType == "Exact":
                    probe(listen_port, host, sub, (), f"Exact {p.path} does not take {sub}")
                else:
                    probe(listen_port, host, sub, (), f"{p.pathType} {p.path} takes {sub}")
                    if path != "/":
                        probe(listen_port, host, path + "x", (),
                              f"{p.pathType} {p.path} vs {path}x"
                              + (" (nginx's plain prefix)" if p.pathType != "Prefix"
                                 else " (path elements only)"))
    for port in table.ports:
        probe(port, "unknown.invalid", "/", (), "an unknown host")
    attached, _ = attach(cfg)
    for rt, _gw, lst, names in attached:
        for host in names:
            for rule in rt.rules:
                for m in rule.matches or [HTTPRouteMatch()]:
                    headers = tuple((h.name, h.value) for h in m.headers)
                    probe(lst.port, _sample_host(host), m.path.value, headers,
                          f"{m.path.type} {m.path.value}"
                          + "".join(f" {n}: {v}" for n, v in headers))
    return list(dict.fromkeys(out))

