"""Ingress and Gateway API rules, and the nginx.conf a real nginx routes them with.

Pure code: scenario sections in Kubernetes' shapes (`ingresses:`, `gateways:`, `httproutes:`) ->
checked specs -> one routing table (servers by port and host, locations by path, candidates in
the Gateway API's precedence) -> the text of an nginx.conf in the shape of ingress-nginx's
rootfs/etc/nginx/template/nginx.tmpl. Only `check_conf` at the bottom runs a process.

    cfg = IngressConfig.model_validate({"ingresses": [...], "gateways": [...], "httproutes": [...]})
    errors = validate(cfg)                     # [] or Problems(loc, message naming the fix)
    table = build_table(cfg, resolve)          # resolve(ns, service, port) -> "ip:port" | None
    text = nginx_conf(table, state_dir="/run/netlab/labs/x/ingress")
    argv = nginx_argv(conf_path, state_dir)    # run it in the ingress pod's namespace
    probes(cfg, table)                         # the curls verify sends, with what must answer
    routes_table("ingress", cfg, address=lb)   # `netlab get ingress` rows, kubectl's columns

Upstreams are Service ClusterIP:port, not endpoints. ingress-nginx itself balances over the
Service's endpoints (its Lua balancer reads EndpointSlices, skipping kube-proxy) unless the
`nginx.ingress.kubernetes.io/service-upstream: "true"` annotation asks for the ClusterIP, which is
what netlab does: the lesson then shows both layers (nginx picks the Service by host and path,
kube-proxy's nftables `numgen` picks the pod), and pods that come and go (`scale`, `delete`) need
no nginx reload. A Service without endpoints is then refused by kube-proxy and nginx answers 502,
exactly where verify should fail.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NGINX = "/usr/sbin/nginx"
INGRESS_CLASS = "nginx"        # the only IngressClass netlab's controller serves
GATEWAY_CLASS = "netlab"       # the only GatewayClass

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Paths go into `location` unquoted: no spaces, braces, semicolons or quotes.
_PATH = re.compile(r"^/[A-Za-z0-9._~%/+:@-]*$")
# nginx drops header names with underscores (underscores_in_headers off) and exposes the rest as
# $http_<lower name with - as _>.
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
_HEADER_VALUE = re.compile(r"^[A-Za-z0-9._~:/+=,@ -]+$")

Resolve = Callable[[str, str, Union[int, str]], Optional[str]]


# ---------------------------------------------------------------- specs (Kubernetes' shapes)

class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _name(v: str) -> str:
    if not _NAME.match(v) or len(v) > 63:
        raise ValueError(f"'{v}' is not a Kubernetes name: lower-case letters, digits and '-', "
                         f"like 'web-v2'")
    return v


def _host(v: str) -> str:
    if not _HOST.match(v) or len(v) > 253:
        raise ValueError(f"'{v}' is not a host name: write it like shop.example.com, or "
                         f"*.example.com for every name under it")
    return v


def _path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"path '{v}' must start with '/': write /{v}")
    if not _PATH.match(v):
        raise ValueError(f"path '{v}' has characters netlab does not route: use letters, digits "
                         f"and . _ ~ % / + : @ -")
    if "//" in v or "/./" in v or "/../" in v or v.endswith(("/.", "/..")):
        # nginx normalises the request's path first: such a location would never match.
        raise ValueError(f"path '{v}' has an empty, '.' or '..' segment, which nginx removes from "
                         f"every request before matching: write it without")
    return v


class ServiceBackendPort(_Spec):
    number: Optional[int] = Field(default=None, ge=1, le=65535)
    name: Optional[str] = None
    _n = field_validator("name")(classmethod(lambda cls, v: v if v is None else _name(v)))

    @model_validator(mode="after")
    def _one(self):
        if (self.number is None) == (self.name is None):
            raise ValueError("give the Service port as `number: 80` or `name: http`, one of them")
        return self

    @property
    def value(self) -> Union[int, str]:
        return self.number if self.number is not None else self.name


class IngressServiceBackend(_Spec):
    name: str
    port: ServiceBackendPort
    _n = field_validator("name")(classmethod(lambda cls, v: _name(v)))


class IngressBackend(_Spec):
    service: IngressServiceBackend


class HTTPIngressPath(_Spec):
    path: str = "/"
    pathType: Literal["Exact", "Prefix", "ImplementationSpecific"]
    backend: IngressBackend
    _p = field_validator("path")(classmethod(lambda cls, v: _path(v)))


class HTTPIngressRuleValue(_Spec):
    paths: list[HTTPIngressPath] = Field(min_length=1)


class IngressRule(_Spec):
    host: Optional[str] = None
    http: Optional[HTTPIngressRuleValue] = None
    _h = field_validator("host")(classmethod(lambda cls, v: v if v is None else _host(v)))


class IngressSpec(_Spec):
    name: str
    namespace: str = "default"
    ingressClassName: Optional[str] = None
    defaultBackend: Optional[IngressBackend] = None
    rules: list[IngressRule] = []
    _n = field_validator("name", "namespace")(classmethod(lambda cls, v: _name(v)))


class RouteNamespaces(_Spec):
    from_: Literal["Same", "All"] = Field(default="Same", alias="from")


class RouteGroupKind(_Spec):
    group: str = "gateway.networking.k8s.io"
    kind: str


class AllowedRoutes(_Spec):
    namespaces: RouteNamespaces = RouteNamespaces()
    kinds: Optional[list[RouteGroupKind]] = None


class Listener(_Spec):
    name: str
    protocol: Literal["HTTP"] = "HTTP"
    port: int = Field(ge=1, le=65535)
    hostname: Optional[str] = None
    allowedRoutes: AllowedRoutes = AllowedRoutes()
    _n = field_validator("name")(classmethod(lambda cls, v: _name(v)))
    _h = field_validator("hostname")(classmethod(lambda cls, v: v if v is None else _host(v)))


class GatewaySpec(_Spec):
    name: str
    namespace: str = "default"
    gatewayClassName: str
    listeners: list[Listener] = Field(min_length=1)
    _n = field_validator("name", "namespace")(classmethod(lambda cls, v: _name(v)))


class ParentReference(_Spec):
    name: str
    namespace: Optional[str] = None
    sectionName: Optional[str] = None
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    _n = field_validator("name")(classmethod(lambda cls, v: _name(v)))


class HTTPPathMatch(_Spec):
    type: Literal["Exact", "PathPrefix"] = "PathPrefix"
    value: str = "/"
    _p = field_validator("value")(classmethod(lambda cls, v: _path(v)))


class HTTPHeaderMatch(_Spec):
    name: str
    value: str
    type: Literal["Exact"] = "Exact"

    @field_validator("name")
    @classmethod
    def _hn(cls, v):
        if not _HEADER_NAME.match(v):
            raise ValueError(f"header name '{v}': use letters, digits and '-' (nginx drops header "
                             f"names with '_'), like x-canary")
        return v

    @field_validator("value")
    @classmethod
    def _hv(cls, v):
        if not _HEADER_VALUE.match(v):
            raise ValueError(f"header value '{v}': use letters, digits, spaces and . _ ~ : / + = , "
                             f"@ -")
        return v


class HTTPRouteMatch(_Spec):
    path: HTTPPathMatch = HTTPPathMatch()
    headers: list[HTTPHeaderMatch] = []


class HTTPBackendRef(_Spec):
    name: str
    namespace: Optional[str] = None
    port: int = Field(ge=1, le=65535)
    weight: int = Field(default=1, ge=0, le=1_000_000)
    _n = field_validator("name")(classmethod(lambda cls, v: _name(v)))


class HTTPRouteRule(_Spec):
    matches: list[HTTPRouteMatch] = [HTTPRouteMatch()]
    backendRefs: list[HTTPBackendRef] = []


class HTTPRouteSpec(_Spec):
    name: str
    namespace: str = "default"
    parentRefs: list[ParentReference] = Field(min_length=1)
    hostnames: list[str] = []
    rules: list[HTTPRouteRule] = [HTTPRouteRule()]
    _n = field_validator("name", "namespace")(classmethod(lambda cls, v: _name(v)))
    _h = field_validator("hostnames")(classmethod(lambda cls, v: [_host(h) for h in v]))


class IngressConfig(_Spec):
    """The three scenario sections, as the lead embeds them in the scenario's schema."""
    ingresses: list[IngressSpec] = []
    gateways: list[GatewaySpec] = []
    httproutes: list[HTTPRouteSpec] = []


# ---------------------------------------------------------------- validation

@dataclass(frozen=True)
class Problem:
    """One mistake: where it is (a path into the scenario, as model.py's locations are, so the
    lead can name the YAML line) and what to do about it."""
    loc: tuple
    message: str

    def __str__(self) -> str:
        return self.message


def validate(cfg: IngressConfig, services: Optional[dict[tuple[str, str], set]] = None
             ) -> list[Problem]:
    """Every mistake in the sections, each naming the fix. services, when given, maps
    (namespace, name) to the Service's port numbers and names, so unknown backends are caught."""
    errors: list[Problem] = []

    def fail(loc: tuple, message: str) -> None:
        errors.append(Problem(loc, message))

    def backend(loc: tuple, where: str, ns: str, name: str, port) -> None:
        if services is None:
            return
        ports = services.get((ns, name))
        if ports is None:
            known = sorted(n for (s, n) in services if s == ns)
            fail(loc, f"{where}: no Service '{name}' in namespace '{ns}': "
                      f"known there: {', '.join(known) or 'none'}")
        elif port not in ports:
            fail(loc, f"{where}: Service {ns}/{name} has no port {port!r}: it has "
                      f"{', '.join(str(p) for p in sorted(ports, key=str))}")

    def too_wide(loc: tuple, where: str, host: Optional[str]) -> None:
        if host is not None and host.startswith("*.") and "." not in host[2:]:
            fail(loc, f"{where}: host '{host}' is too wide: a wildcard needs a domain under it, "
                      f"like *.example.com")

    seen_paths: dict[tuple, str] = {}
    default_owner = None
    for i, ing in enumerate(cfg.ingresses):
        at = ("ingresses", i)
        who = f"ingresses[{i}] ({ing.namespace}/{ing.name})"
        if ing.ingressClassName not in (None, INGRESS_CLASS):
            fail(at + ("ingressClassName",),
                 f"{who}: ingressClassName '{ing.ingressClassName}' has no controller "
                 f"here: netlab's nginx serves `ingressClassName: {INGRESS_CLASS}`")
        if not ing.rules and ing.defaultBackend is None:
            fail(at, f"{who}: routes nothing: add `rules:` or a `defaultBackend:`")
        if ing.defaultBackend is not None:
            b = ing.defaultBackend.service
            backend(at + ("defaultBackend",), f"{who} defaultBackend", ing.namespace, b.name,
                    b.port.value)
            if default_owner is not None:
                fail(at + ("defaultBackend",),
                     f"{who}: a defaultBackend is already given by {default_owner}: "
                     f"one controller has one default server, keep one")
            default_owner = default_owner or who
        for r, rule in enumerate(ing.rules):
            too_wide(at + ("rules", r, "host"), f"{who} rules[{r}]", rule.host)
            for p, path in enumerate(rule.http.paths if rule.http else []):
                loc = at + ("rules", r, "http", "paths", p)
                where = f"{who} rules[{r}] paths[{p}]"
                b = path.backend.service
                backend(loc + ("backend",), where, ing.namespace, b.name, b.port.value)
                key = (rule.host, path.pathType, _norm(path.path, path.pathType))
                if key in seen_paths:
                    fail(loc, f"{where}: host {rule.host or '*'} path {path.path} "
                              f"({path.pathType}) is already routed by {seen_paths[key]}: "
                              f"remove one")
                seen_paths.setdefault(key, where)

    gws: dict[tuple[str, str], GatewaySpec] = {}
    for i, gw in enumerate(cfg.gateways):
        at = ("gateways", i)
        who = f"gateways[{i}] ({gw.namespace}/{gw.name})"
        if (gw.namespace, gw.name) in gws:
            fail(at + ("name",), f"{who}: a second Gateway with this name: rename one")
        gws[(gw.namespace, gw.name)] = gw
        if gw.gatewayClassName != GATEWAY_CLASS:
            fail(at + ("gatewayClassName",),
                 f"{who}: gatewayClassName '{gw.gatewayClassName}' has no controller "
                 f"here: netlab's GatewayClass is `{GATEWAY_CLASS}`")
        names, binds = set(), {}
        for j, listener in enumerate(gw.listeners):
            loc = at + ("listeners", j)
            too_wide(loc + ("hostname",), f"{who} listener {listener.name}", listener.hostname)
            if listener.name in names:
                fail(loc + ("name",),
                     f"{who}: two listeners named '{listener.name}': names are unique")
            names.add(listener.name)
            bind = (listener.port, listener.hostname)
            if bind in binds:
                fail(loc, f"{who}: listeners '{binds[bind]}' and '{listener.name}' both take "
                          f"port {listener.port} hostname {listener.hostname or '*'} "
                          f"(Conflicted): give them different hostnames or ports")
            binds[bind] = listener.name

    for i, rt in enumerate(cfg.httproutes):
        at = ("httproutes", i)
        who = f"httproutes[{i}] ({rt.namespace}/{rt.name})"
        for h, host in enumerate(rt.hostnames):
            too_wide(at + ("hostnames", h), who, host)
        for j, ref in enumerate(rt.parentRefs):
            key = (ref.namespace or rt.namespace, ref.name)
            if key not in gws:
                known = ", ".join(f"{n}/{g}" for n, g in gws) or "none"
                fail(at + ("parentRefs", j),
                     f"{who}: parentRef '{ref.name}' is no Gateway in namespace "
                     f"'{key[0]}': known Gateways: {known}")
        for r, rule in enumerate(rt.rules):
            for m, match in enumerate(rule.matches):
                names = [h.name.lower() for h in match.headers]
                if len(set(names)) != len(names):
                    fail(at + ("rules", r, "matches", m, "headers"),
                         f"{who} rules[{r}] matches[{m}]: a header is matched twice: "
                         f"match each name once")
            for k, b in enumerate(rule.backendRefs):
                backend(at + ("rules", r, "backendRefs", k), f"{who} rules[{r}] backendRef "
                        f"{b.name}", b.namespace or rt.namespace, b.name, b.port)
    return errors


def _norm(path: str, kind: str) -> str:
    """Prefix paths match on elements, so a trailing slash means nothing (/api/ == /api)."""
    if kind in ("Prefix", "PathPrefix") and path != "/":
        return path.rstrip("/") or "/"
    return path


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


# ---------------------------------------------------------------- nginx.conf

def _upstream_name(c: Candidate) -> str:
    live = [b for b in c.backends if b.weight > 0]
    if len(live) == 1:
        b = live[0]
        return f"{b.namespace}-{b.service}-{b.port}"       # ingress-nginx's namespace-service-port
    return "split-" + "-".join(f"{b.namespace}-{b.service}-{b.port}-w{b.weight}" for b in live)


def _target(c: Candidate) -> str:
    return str(c.status) if c.status else _upstream_name(c)


def nginx_conf(table: RoutingTable, state_dir: str, comment: str = "") -> str:
    """The whole nginx.conf. Everything nginx writes (pid, logs, temp files, the socket of the
    internal 500 server) is under state_dir; nothing touches /var/log/nginx or /var/lib/nginx."""
    sd = state_dir.rstrip("/")
    upstreams: dict[str, Candidate] = {}
    flags: dict[tuple[str, str], str] = {}
    maps: list[str] = []
    servers_text: list[str] = []
    invalid = False

    for si, srv in enumerate(table.servers):
        body = [f"    ## start server {srv.server_name} port {srv.port} ({srv.api})",
                "    server {",
                f"        listen {srv.port}{' default_server' if srv.host is None else ''};",
                f"        server_name {srv.server_name};", ""]
        for li, loc in enumerate(srv.locations):
            for c in loc.candidates:
                if not c.status:
                    upstreams.setdefault(_upstream_name(c), c)
                    invalid |= any(b.upstream is None for b in c.backends)
            body.append(f"        location {loc.op + ' ' if loc.op else ''}{loc.path} {{")
            for c in loc.candidates:
                hdr = "".join(f" {n}: {v}" for n, v in c.headers)
                body.append(f"            # {c.kind} {c.path}{' and' + hdr if hdr else ''} "
                            f"-> {_describe_backends(c)}  ({c.source})")
            if len(loc.candidates) == 1:
                only = loc.candidates[0]
                body.append(f"            return {only.status};" if only.status else
                            f"            proxy_pass http://{_upstream_name(only)};")
            else:
                var = f"$route_{si}_{li}"
                keys = []
                for c in loc.candidates[:-1]:
                    for h in c.headers:
                        if h not in flags:
                            flags[h] = f"$header_{len(flags)}"
                        if flags[h] not in keys:
                            keys.append(flags[h])
                lines = [f"    map \"{''.join(keys)}\" {var} {{"]
                for c in loc.candidates[:-1]:
                    want = {flags[h] for h in c.headers}
                    pattern = "".join("1" if k in want else "." for k in keys)
                    lines.append(f"        \"~^{pattern}$\" {_target(c)};")
                lines += [f"        default {_target(loc.candidates[-1])};", "    }"]
                maps.append("\n".join(lines))
                for status in sorted({c.status for c in loc.candidates if c.status}):
                    body.append(f"            if ({var} = \"{status}\") {{ return {status}; }}")
                body.append(f"            proxy_pass http://{var};")
            body.append("        }")
        body += ["    }", f"    ## end server {srv.server_name} port {srv.port}", ""]
        servers_text.append("\n".join(body))

    flag_maps = []
    for (name, value), var in flags.items():
        # Gateway API header values match exactly and case-sensitively: a `~` regex, not map's
        # case-insensitive plain strings. Header names are case-insensitive ($http_x_canary).
        flag_maps.append(f"    map $http_{name.replace('-', '_')} {var} {{\n"
                         f"        \"~^{re.escape(value)}$\" 1;\n        default 0;\n    }}")

    ups = []
    for name, c in upstreams.items():
        live = [b for b in c.backends if b.weight > 0]
        lines = [f"    upstream {name} {{"]
        for b in live:
            addr = b.upstream or f"unix:{sd}/invalid-backend.sock"
            weight = f" weight={b.weight}" if len(live) > 1 else ""
            lines.append(f"        server {addr}{weight} max_fails=0;   "
                         f"# Service {b.namespace}/{b.service} port {b.port}")
        ups.append("\n".join(lines + ["    }"]))

    internal = []
    if invalid:
        internal = [f"    # backendRefs that name no Service: their share of requests gets 500",
                    "    server {", f"        listen unix:{sd}/invalid-backend.sock;",
                    "        return 500;", "    }", ""]

    head = [
        "# nginx.conf written by netlab in the shape of ingress-nginx's nginx.tmpl",
        *(f"# {line}" for line in comment.splitlines()),
        "# Upstreams are Service ClusterIP:port: nginx picks the Service, kube-proxy the pod.",
        "",
        "daemon off;",
        "master_process on;",
        "# one worker: weighted upstreams split exactly as weighted (each worker counts alone)",
        "worker_processes 1;",
        f"pid {sd}/nginx.pid;",
        f"error_log {sd}/error.log notice;",
        "",
        "events {",
        "    worker_connections 1024;",
        "}",
        "",
        "http {",
        f"    client_body_temp_path {sd}/client-body;",
        f"    proxy_temp_path {sd}/proxy-temp;",
        f"    fastcgi_temp_path {sd}/fastcgi-temp;",
        f"    uwsgi_temp_path {sd}/uwsgi-temp;",
        f"    scgi_temp_path {sd}/scgi-temp;",
        "",
        "    default_type text/plain;",
        "    server_tokens off;",
        "    log_format upstreaminfo '$remote_addr - [$time_local] \"$request\" $status '",
        "                            '$host \"$http_x_forwarded_for\" $upstream_addr';",
        f"    access_log {sd}/access.log upstreaminfo;",
        "",
        "    # Obtain best http host (the client's Host, port included, passed on unmodified)",
        "    map $http_host $best_http_host {",
        "        default $http_host;",
        "        '' $host;",
        "    }",
        "",
        "    proxy_http_version 1.1;",
        "    proxy_set_header Host $best_http_host;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Host $best_http_host;",
        "    proxy_set_header X-Forwarded-Port $server_port;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header Connection \"\";",
        "    # a refused backend is an answer (502), not a reason to try the other weighted one",
        "    proxy_next_upstream off;",
        "    proxy_connect_timeout 5s;",
        "    # never spool a response to disk: workers (user nobody) need no write access anywhere",
        "    proxy_max_temp_file_size 0;",
        "",
    ]
    parts = head + ups + [""] + flag_maps + maps + [""] + internal + servers_text + ["}", ""]
    return "\n".join(parts)


def _describe_backends(c: Candidate) -> str:
    if c.status and not c.backends:
        return str(c.status)
    out = ", ".join(f"{b.namespace}/{b.service}:{b.port}"
                    f"{'' if len(c.backends) == 1 else f' weight {b.weight}'}"
                    f" ({b.upstream or 'no such Service'})" for b in c.backends)
    return out + (f" -> {c.status}" if c.status else "")


def describe(table: RoutingTable) -> list[str]:
    """One line per location candidate, for `netlab show ingress`: host:port path -> Service."""
    lines = []
    for srv in table.servers:
        host = srv.host or "*"
        for loc in srv.locations:
            for c in loc.candidates:
                hdr = "".join(f" [{n}: {v}]" for n, v in c.headers)
                lines.append(f"{host}:{srv.port} location {loc.op + ' ' if loc.op else ''}"
                             f"{loc.path}{hdr} -> {_describe_backends(c)}")
    return lines


# ---------------------------------------------------------------- what a request should reach

def route_request(table: RoutingTable, port: int, host: str, path: str,
                  headers: Optional[dict[str, str]] = None) -> Candidate:
    """The candidate nginx picks for one request, told the way nginx tells it: server_name
    (exact, then the longest *.wildcard, then regular expressions in order, then the port's
    default server), `location =`, else the longest prefix location, then the first candidate
    whose headers all match. verify's expectations; the integration test checks nginx agrees."""
    host = host.split(":")[0].lower()
    servers = [s for s in table.servers if s.port == port]
    if not servers:
        raise ValueError(f"nothing listens on port {port}: ports {list(table.ports)}")
    exact = [s for s in servers if s.host == host]
    wild = sorted((s for s in servers if s.host and s.host.startswith("*.")
                   and host.endswith(s.host[1:])), key=lambda s: -len(s.host))
    regex = [s for s in servers if s.host and s.host.startswith("~") and re.match(s.host[1:], host)]
    default = [s for s in servers if s.host is None]
    srv = (exact + wild + regex + default)[0]
    loc = next((lc for lc in srv.locations if lc.op == "=" and lc.path == path), None)
    if loc is None:
        loc = max((lc for lc in srv.locations if lc.op == "" and path.startswith(lc.path)),
                  key=lambda lc: len(lc.path))
    low = {k.lower(): v for k, v in (headers or {}).items()}
    return next(c for c in loc.candidates if all(low.get(n) == v for n, v in c.headers))


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


# ---------------------------------------------------------------- kubectl-like views

def routes_table(kind: Literal["ingress", "gateway", "httproute"], cfg: IngressConfig,
                 address: str = "", age: str = "-", port: int = 80,
                 statuses: tuple[RouteStatus, ...] = (), programmed: bool = True
                 ) -> tuple[list[str], list[list[str]]]:
    """Header and rows of `netlab get ingress|gateway|httproute`, with kubectl's columns."""
    if kind == "ingress":
        rows = []
        for ing in cfg.ingresses:
            hosts = sorted({r.host or "*" for r in ing.rules}) or ["*"]
            rows.append([ing.name, ing.ingressClassName or INGRESS_CLASS, ",".join(hosts),
                         address, str(port), age])
        return ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"], rows
    if kind == "gateway":
        return (["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"],
                [[g.name, g.gatewayClassName, address, str(programmed), age]
                 for g in cfg.gateways])
    if kind == "httproute":
        rows = []
        for rt in cfg.httproutes:
            mine = [s for s in statuses if s.route == f"{rt.namespace}/{rt.name}"]
            accepted = ",".join(f"{'True' if s.accepted else 'False'} ({s.reason})"
                                for s in mine) or "-"
            rows.append([rt.name, "[" + ",".join(f'"{h}"' for h in rt.hostnames) + "]",
                         accepted, age])
        return ["NAME", "HOSTNAMES", "ACCEPTED", "AGE"], rows
    raise ValueError(f"unknown kind '{kind}': ingress, gateway or httproute")


# ---------------------------------------------------------------- running nginx (argv; one check)

def nginx_argv(conf_path: str, state_dir: str) -> list[str]:
    """The foreground nginx master (daemon off): run it with `ip netns exec POD`; SIGQUIT stops it
    gracefully, SIGTERM fast, SIGHUP re-reads the conf. -p and -e keep even the log nginx writes
    before it reads the conf inside state_dir."""
    sd = state_dir.rstrip("/")
    return [NGINX, "-c", conf_path, "-p", sd + "/", "-e", f"{sd}/error.log"]


def check_conf(conf_path: str, state_dir: str, netns: Optional[str] = None) -> tuple[bool, str]:
    """`nginx -t` on the file: (ok, nginx's own words). Runs a process; nothing else here does."""
    argv = nginx_argv(conf_path, state_dir) + ["-t", "-q"]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()
