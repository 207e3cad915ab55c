"""The routing table one nginx serves: which HTTPRoutes each Gateway listener takes (with the
Accepted condition the Gateway API status gives), and every (port, host) server with its
locations and their candidates in the Gateway API's precedence; `route_request` says which
candidate nginx picks for one request, told the way nginx tells it. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Optional, Union

from .spec import GATEWAY_CLASS, INGRESS_CLASS, GatewaySpec, HTTPRouteMatch, HTTPRouteSpec, \
    IngressBackend, IngressConfig, Listener, Resolve, _norm

# ---------------------------------------------------------------- Gateway attachment and status

@dataclass(frozen=True)
class RouteStatus:
    """One parentRef of one HTTPRoute, as `status.parents[].conditions[type=Accepted]` says."""
    route: str                 # namespace/name
    parent: str                # namespace/name[/sectionName]
    accepted: bool
    # Accepted | NoMatchingParent | NotAllowedByListeners | NoMatchingListenerHostname
    reason: str
    message: str


def _wild_match(pattern: str, host: str) -> bool:
    """Gateway API: *.example.com matches foo.example.com and a.b.example.com, not example.com."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def intersect_hostnames(listener: Optional[str], route: list[str]) -> Optional[list[Optional[str]]]:
    """The server names a route gets on a listener (the more specific of each pair); None when
    they share none; [None] when both say nothing (any host)."""
    if listener is None:
        return list(route) if route else [None]
    if not route:
        return [listener]
    out: list[Optional[str]] = []
    lw = listener.startswith("*.")
    for h in route:
        hw = h.startswith("*.")
        if h == listener or (lw and not hw and _wild_match(listener, h)):
            out.append(h)
        elif hw and not lw and _wild_match(h, listener):
            out.append(listener)
        elif hw and lw and h.endswith(listener[1:]):
            out.append(h)
        elif hw and lw and listener.endswith(h[1:]):
            out.append(listener)
    return list(dict.fromkeys(out)) or None


def attach(cfg: IngressConfig) -> tuple[list[tuple[HTTPRouteSpec, GatewaySpec, Listener, list]],
                                        list[RouteStatus]]:
    """Which routes each listener takes, and every parentRef's Accepted condition."""
    gws = {(g.namespace, g.name): g for g in cfg.gateways if g.gatewayClassName == GATEWAY_CLASS}
    attached, statuses = [], []
    for rt in cfg.httproutes:
        for ref in rt.parentRefs:
            key = (ref.namespace or rt.namespace, ref.name)
            parent = f"{key[0]}/{key[1]}" + (f"/{ref.sectionName}" if ref.sectionName else "")
            gw = gws.get(key)
            listeners = [] if gw is None else [
                lst for lst in gw.listeners
                if (ref.sectionName is None or lst.name == ref.sectionName)
                and (ref.port is None or lst.port == ref.port)]
            route = f"{rt.namespace}/{rt.name}"
            if not listeners:
                statuses.append(RouteStatus(route, parent, False, "NoMatchingParent",
                                            "no listener of the Gateway has this sectionName/port"
                                            if gw else f"no Gateway of class {GATEWAY_CLASS} "
                                            f"named {key[0]}/{key[1]}"))
                continue
            allowed = [lst for lst in listeners if _allows(lst, gw, rt)]
            if not allowed:
                statuses.append(RouteStatus(route, parent, False, "NotAllowedByListeners",
                                            f"allowedRoutes of listener(s) "
                                            f"{', '.join(lst.name for lst in listeners)} do not "
                                            f"admit an HTTPRoute from namespace {rt.namespace}"))
                continue
            took = [(lst, intersect_hostnames(lst.hostname, rt.hostnames)) for lst in allowed]
            took = [(lst, names) for lst, names in took if names]
            if not took:
                statuses.append(RouteStatus(
                    route, parent, False, "NoMatchingListenerHostname",
                    f"hostnames {', '.join(rt.hostnames)} match no listener hostname "
                    f"({', '.join(lst.hostname or '*' for lst in allowed)})"))
                continue
            for lst, names in took:
                attached.append((rt, gw, lst, names))
            statuses.append(RouteStatus(route, parent, True, "Accepted",
                                        f"attached to listener(s) "
                                        f"{', '.join(lst.name for lst, _ in took)}"))
    return attached, statuses


def _allows(lst: Listener, gw: GatewaySpec, rt: HTTPRouteSpec) -> bool:
    if lst.allowedRoutes.namespaces.from_ == "Same" and rt.namespace != gw.namespace:
        return False
    kinds = lst.allowedRoutes.kinds
    return kinds is None or any(k.kind == "HTTPRoute" for k in kinds)


# ---------------------------------------------------------------- the routing table

@dataclass(frozen=True)
class Backend:
    """A Service port behind a route; upstream is its ClusterIP:port (None: no such Service)."""
    namespace: str
    service: str
    port: Union[int, str]
    weight: int
    upstream: Optional[str]


@dataclass(frozen=True)
class Candidate:
    """One match of one rule: a path (Exact, Prefix on elements, or nginx's own Plain prefix for
    ImplementationSpecific), header equalities, and where it sends the request."""
    kind: Literal["Exact", "Prefix", "Plain"]
    path: str
    headers: tuple[tuple[str, str], ...]
    backends: tuple[Backend, ...]
    source: str                   # "ingress shop/shop", "httproute default/canary rules[1]"
    order: tuple                  # creation order stand-in: list order, then rule, then match
    status: Optional[int] = None  # answer this instead of proxying (404, 500, 503)

    def key(self) -> tuple:
        """Gateway API precedence: Exact, then longest prefix, then most headers, then order."""
        return (self.kind != "Exact", -len(self.path), -len(self.headers), self.order)

    def applies(self, op: str, loc: str) -> bool:
        """Does this match take every request nginx sends to `location op loc`?"""
        if self.kind == "Exact":
            return op == "=" and loc == self.path
        if self.kind == "Plain":
            return loc.startswith(self.path)
        if self.path == "/":
            return True
        return loc == self.path if op == "=" else loc.startswith(self.path + "/")


@dataclass(frozen=True)
class Location:
    op: Literal["=", ""]          # "=" exact, "" prefix
    path: str
    candidates: tuple[Candidate, ...]   # in precedence order, ending with one without headers


@dataclass(frozen=True)
class Server:
    port: int
    host: Optional[str]           # None: the port's default server
    locations: tuple[Location, ...]
    api: str                      # "ingress", "gateway" or "ingress+gateway"

    @property
    def server_name(self) -> str:
        return "_" if self.host is None else self.host


@dataclass(frozen=True)
class RoutingTable:
    servers: tuple[Server, ...]
    statuses: tuple[RouteStatus, ...]
    ports: tuple[int, ...]


def _ingress_host(host: Optional[str]) -> Optional[str]:
    """Ingress wildcards cover ONE label (*.foo.com: bar.foo.com, not baz.bar.foo.com), nginx's
    *.foo.com covers any number: say it as a regular expression server_name."""
    if host and host.startswith("*."):
        return "~^[^.]+" + re.escape(host[1:]).replace("\\-", "-") + "$"
    return host


def build_table(cfg: IngressConfig, resolve: Resolve, listen_port: int = 80) -> RoutingTable:
    """Every (port, host) server with its locations and candidates. Ingresses listen on
    listen_port, Gateways on their listeners' ports. List order stands for creation order."""
    per: dict[tuple[int, Optional[str]], list[Candidate]] = {}
    apis: dict[tuple[int, Optional[str]], set] = {}
    fallback: dict[tuple[int, Optional[str]], Candidate] = {}

    def add(port, host, cand, api):
        per.setdefault((port, host), []).append(cand)
        apis.setdefault((port, host), set()).add(api)

    def ing_backend(ns, b: IngressBackend) -> Backend:
        s = b.service
        return Backend(ns, s.name, s.port.value, 1, resolve(ns, s.name, s.port.value))

    default = None
    for i, ing in enumerate(cfg.ingresses):
        if ing.ingressClassName not in (None, INGRESS_CLASS):
            continue
        if ing.defaultBackend is not None and default is None:
            b = ing_backend(ing.namespace, ing.defaultBackend)
            default = Candidate("Prefix", "/", (), (b,), f"ingress {ing.namespace}/{ing.name} "
                                f"defaultBackend", (9, i), None if b.upstream else 503)
        for r, rule in enumerate(ing.rules):
            host = _ingress_host(rule.host)
            for p, path in enumerate(rule.http.paths if rule.http else []):
                kind = {"Exact": "Exact", "Prefix": "Prefix"}.get(path.pathType, "Plain")
                b = ing_backend(ing.namespace, path.backend)
                add(listen_port, host, Candidate(
                    kind, _norm(path.path, path.pathType), (), (b,),
                    f"ingress {ing.namespace}/{ing.name}", (0, i, r, p),
                    None if b.upstream else 503), "ingress")
    not_found = Candidate("Prefix", "/", (), (), "no rule matched", (10,), 404)
    for key in list(per):
        fallback[key] = default or not_found
    if default is not None:
        fallback[(listen_port, None)] = default
        apis.setdefault((listen_port, None), set()).add("ingress")
        per.setdefault((listen_port, None), [])

    attached, statuses = attach(cfg)
    for rt, gw, lst, names in attached:
        ri = cfg.httproutes.index(rt)
        for r, rule in enumerate(rt.rules):
            refs = []
            for b in rule.backendRefs:
                ns = b.namespace or rt.namespace
                refs.append(Backend(ns, b.name, b.port, b.weight, resolve(ns, b.name, b.port)))
            live = [b for b in refs if b.weight > 0]
            # Gateway API: a rule with no usable backend answers 500.
            status = None if any(b.upstream for b in live) else 500
            # No matches (or `matches: []`) is the spec's default: PathPrefix / for every request.
            for m, match in enumerate(rule.matches or [HTTPRouteMatch()]):
                kind = "Exact" if match.path.type == "Exact" else "Prefix"
                cand = Candidate(kind, _norm(match.path.value, match.path.type),
                                 tuple((h.name.lower(), h.value) for h in match.headers),
                                 tuple(live), f"httproute {rt.namespace}/{rt.name} rules[{r}]",
                                 (1, ri, r, m), status)
                for host in names:
                    add(lst.port, host, cand, "gateway")
                    fallback.setdefault((lst.port, host), not_found)
        for host in names:
            per.setdefault((lst.port, host), [])
    # A listener hostname with no route still answers 404 for its names, not the default server.
    for gw in (g for g in cfg.gateways if g.gatewayClassName == GATEWAY_CLASS):
        for lst in gw.listeners:
            per.setdefault((lst.port, lst.hostname), [])
            apis.setdefault((lst.port, lst.hostname), set()).add("gateway")
            fallback.setdefault((lst.port, lst.hostname), not_found)
    ports = sorted({p for p, _ in per} | ({listen_port} if cfg.ingresses else set()))
    for port in ports:
        per.setdefault((port, None), [])
        apis.setdefault((port, None), set()).add("ingress" if port == listen_port else "gateway")
        fallback.setdefault((port, None), default if port == listen_port and default
                            else not_found)

    servers = []
    for (port, host) in sorted(per, key=lambda k: (k[0], k[1] is not None, k[1] or "")):
        cands = per[(port, host)] + [fallback[(port, host)]]
        servers.append(Server(port, host, _locations(cands),
                              "+".join(sorted(apis.get((port, host), {"gateway"})))))
    return RoutingTable(tuple(servers), tuple(statuses), tuple(ports))


def _locations(cands: list[Candidate]) -> tuple[Location, ...]:
    locs = {("", "/")}
    for c in cands:
        if c.kind == "Exact":
            locs.add(("=", c.path))
        elif c.kind == "Plain":
            locs.add(("", c.path))
        elif c.path != "/":
            # Prefix /api: `location = /api` and `location /api/`, so /apix is not matched.
            locs |= {("=", c.path), ("", c.path + "/")}
    out = []
    for op, path in sorted(locs, key=lambda lp: (lp[1], lp[0] != "=")):
        chosen = []
        for c in sorted((c for c in cands if c.applies(op, path)), key=Candidate.key):
            chosen.append(c)
            if not c.headers:
                break      # it always matches: nothing after it is ever reached
        out.append(Location(op, path, tuple(chosen)))
    return tuple(out)


def pick(servers, port: int, host: str, path: str):
    """The server and location nginx takes a request to: server_name (exact, then the longest
    *.wildcard, then regular expressions in order, then the port's default server, else its first
    one, as nginx does), `location =`, else the longest prefix location (None: no location takes
    it). Works on any servers with port, host and locations of op and path: the routing table's,
    and those read back from the live nginx.conf (live.py)."""
    host = host.split(":")[0].lower()
    servers = [s for s in servers if s.port == port]
    if not servers:
        raise ValueError(f"nothing listens on port {port}")
    exact = [s for s in servers if s.host == host]
    wild = sorted((s for s in servers if s.host and s.host.startswith("*.")
                   and host.endswith(s.host[1:])), key=lambda s: -len(s.host))
    regex = [s for s in servers if s.host and s.host.startswith("~") and re.match(s.host[1:], host)]
    default = [s for s in servers if s.host is None]
    srv = (exact + wild + regex + default + servers)[0]
    loc = next((lc for lc in srv.locations if lc.op == "=" and lc.path == path), None)
    if loc is None:
        loc = max((lc for lc in srv.locations if lc.op == "" and path.startswith(lc.path)),
                  key=lambda lc: len(lc.path), default=None)
    return srv, loc


def route_request(table: RoutingTable, port: int, host: str, path: str,
                  headers: Optional[dict[str, str]] = None) -> Candidate:
    """The candidate nginx picks for one request, told the way nginx tells it (`pick`), then the
    first candidate of the location whose headers all match. verify's expectations; the
    integration test checks nginx agrees."""
    if not any(s.port == port for s in table.servers):
        raise ValueError(f"nothing listens on port {port}: ports {list(table.ports)}")
    _, loc = pick(table.servers, port, host, path)
    low = {k.lower(): v for k, v in (headers or {}).items()}
    return next(c for c in loc.candidates if all(low.get(n) == v for n, v in c.headers))
