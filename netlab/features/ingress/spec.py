"""Ingress and Gateway API in Kubernetes' shapes: the scenario's `ingresses:`, `gateways:` and
`httproutes:` sections as strict specs, and `validate`, every mistake with its location in the
scenario and the fix (a Problem). Pure.
"""

from __future__ import annotations

import re
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

