"""The nginx.conf a RoutingTable becomes, in the shape of ingress-nginx's
rootfs/etc/nginx/template/nginx.tmpl; `describe` (one line per candidate), `routes_table`
(`netlab get ingress|gateway|httproute` with kubectl's columns), and the nginx command line.
Pure, except `check_conf`, which runs `nginx -t`.

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
from typing import Literal, Optional

from .spec import INGRESS_CLASS, NGINX, IngressConfig
from .table import Candidate, RouteStatus, RoutingTable

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
