"""The Ingress and Gateway API core, by its old name: it lives in netlab/features/ingress/ (spec,
table, conf, requests); this module re-exports its public API.

    cfg = IngressConfig.model_validate({"ingresses": [...], "gateways": [...], "httproutes": [...]})
    errors = validate(cfg)                     # [] or Problems(loc, message naming the fix)
    table = build_table(cfg, resolve)          # resolve(ns, service, port) -> "ip:port" | None
    text = nginx_conf(table, state_dir="/run/netlab/labs/x/ingress")
    argv = nginx_argv(conf_path, state_dir)    # run it in the ingress pod's namespace
    probes(cfg, table)                         # the curls verify sends, with what must answer
    routes_table("ingress", cfg, address=lb)   # `netlab get ingress` rows, kubectl's columns
"""

from __future__ import annotations

from .features.ingress.conf import check_conf, describe, nginx_argv, nginx_conf, routes_table
from .features.ingress.requests import Probe, probes
from .features.ingress.spec import GATEWAY_CLASS, INGRESS_CLASS, NGINX, IngressConfig, Problem, \
    validate
from .features.ingress.table import RouteStatus, RoutingTable, attach, build_table, \
    intersect_hostnames, route_request

__all__ = ["GATEWAY_CLASS", "INGRESS_CLASS", "NGINX", "IngressConfig", "Probe", "Problem",
           "RouteStatus", "RoutingTable", "attach", "build_table", "check_conf", "describe",
           "intersect_hostnames", "nginx_argv", "nginx_conf", "probes", "route_request",
           "routes_table", "validate"]
