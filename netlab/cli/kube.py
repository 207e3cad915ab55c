"""kubectl-like commands for a lab that is up: `get pods|svc|endpoints|deployments`, `scale`,
`delete` and `port-forward`, with kubectl's columns. Registered from cli/__init__.py.

The rows are pure functions of the Lab (and the pods' status), unit-tested without a kernel.
"""

from __future__ import annotations

import time
from typing import List, Optional

import typer

from ..core.errors import NetlabError
from ..core.lab import Lab
from ..features import services as S
from ..runtime import state
from .console import need_root, out, table

KINDS = {"pods": "pods", "pod": "pods", "po": "pods", "svc": "svc", "service": "svc",
         "services": "svc", "endpoints": "endpoints", "ep": "endpoints",
         "deployments": "deployments", "deployment": "deployments", "deploy": "deployments",
         "ingress": "ingress", "ingresses": "ingress", "ing": "ingress",
         "gateway": "gateway", "gateways": "gateway", "gtw": "gateway",
         "httproute": "httproute", "httproutes": "httproute", "dns": "dns"}
ROUTES = ("ingress", "gateway", "httproute")      # rows from features/ingress


def age(seconds: float) -> str:
    """kubectl's AGE: 45s, 5m, 3h, 2d."""
    s = int(max(seconds, 0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _ns_ok(ns: str, want: Optional[str]) -> bool:
    return want is None or ns == want


def pod_rows(lab: Lab, running: dict, born: dict, now: float, ns: Optional[str],
             wide: bool) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """NAME READY STATUS RESTARTS AGE (-o wide: IP NODE); `running`: pod -> containers alive."""
    cols = ("NAME", "READY", "STATUS", "RESTARTS", "AGE") + (("IP", "NODE") if wide else ())
    rows = []
    for p in lab.pods:
        if not _ns_ok(p.namespace, ns):
            continue
        alive = running.get(p.name, 0)
        status = "Running" if alive == len(p.containers) else "Error"
        row = (p.name, f"{alive}/{len(p.containers)}", status, "0", age(now - born.get(p.name, now)))
        rows.append(row + ((p.ip, p.node) if wide else ()))
    return cols, rows


def svc_rows(lab: Lab, created: float, now: float, ns: Optional[str], wide: bool):
    """NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE (-o wide: SELECTOR)."""
    cols = ("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE") + \
        (("SELECTOR",) if wide else ())
    rows = []
    for s in lab.services:
        if _ns_ok(s.namespace, ns):
            row = (s.name, s.type, s.cluster_ip or "None", s.load_balancer_ip or "<none>",
                   S.ports_text(s), age(now - created))
            rows.append(row + ((",".join(f"{k}={v}" for k, v in s.selector),) if wide else ()))
    return cols, rows


def endpoints_rows(lab: Lab, created: float, now: float, ns: Optional[str]):
    """NAME ENDPOINTS AGE, as `kubectl get endpoints`."""
    eps = S.all_endpoints(lab)
    rows = [(s.name, ",".join(dict.fromkeys(e.address for e in eps[s.key])) or "<none>",
             age(now - created)) for s in lab.services if _ns_ok(s.namespace, ns)]
    return ("NAME", "ENDPOINTS", "AGE"), rows


def deployment_rows(lab: Lab, running: dict, created: float, now: float, ns: Optional[str]):
    """NAME READY UP-TO-DATE AVAILABLE AGE."""
    rows = []
    for d in lab.deployments:
        if _ns_ok(d.namespace, ns):
            ready = sum(running.get(p, 0) == len(lab.pod(p).containers) for p in d.pods)
            rows.append((d.name, f"{ready}/{d.replicas}", str(d.replicas), str(ready),
                         age(now - created)))
    return ("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"), rows


def _routes(lab: Lab, kind: str) -> list:
    cfg = lab.ingress.config if lab.ingress is not None else None
    if cfg is None:
        return []
    return {"ingress": cfg.ingresses, "gateway": cfg.gateways, "httproute": cfg.httproutes}[kind]


def route_rows(lab: Lab, kind: str, created: float, now: float, ns: Optional[str]):
    """`kubectl get ingress|gateway|httproute`: NAME CLASS HOSTS ADDRESS PORTS AGE, NAME CLASS
    ADDRESS PROGRAMMED AGE, NAME HOSTNAMES ACCEPTED AGE (features/ingress/conf.routes_table)."""
    from ..features import ingress as I
    if lab.ingress is None:
        return I.C.routes_table(kind, I.IngressConfig())[0], []
    cfg = lab.ingress.config
    mine = I.IngressConfig(**{k: [o for o in getattr(cfg, k) if _ns_ok(o.namespace, ns)]
                              for k in ("ingresses", "gateways", "httproutes")})
    addr, _ = I.address_of(lab)
    cols, rows = I.C.routes_table(kind, mine, address=addr, age=age(now - created),
                                  port=I.LISTEN_PORT, statuses=I.table_of(lab).statuses)
    return tuple(cols), [tuple(r) for r in rows]


def as_json(lab: Lab, kind: str, ns: Optional[str]) -> dict:
    """A kubectl-shaped List (metadata, spec, status) of one kind."""
    items: list[dict] = []
    if kind == "pods":
        items = [{"kind": "Pod", "metadata": {"name": p.name, "namespace": p.namespace,
                                              "labels": dict(p.labels)},
                  "spec": {"nodeName": p.node, "containers": [
                      {"name": c.name, "ports": [{"containerPort": c.port}] if c.port else []}
                      for c in p.containers]},
                  "status": {"podIP": p.ip}} for p in lab.pods if _ns_ok(p.namespace, ns)]
    elif kind == "svc":
        items = [{"kind": "Service", "metadata": {"name": s.name, "namespace": s.namespace},
                  "spec": {"type": s.type, "clusterIP": s.cluster_ip,
                           "selector": dict(s.selector),
                           "externalTrafficPolicy": s.external_traffic_policy,
                           "sessionAffinity": s.session_affinity,
                           "ports": [{"name": p.name, "port": p.port, "targetPort": p.target_port,
                                      "protocol": p.protocol, "nodePort": p.node_port}
                                     for p in s.ports]},
                  "status": {"loadBalancer": {"ingress": [{"ip": s.load_balancer_ip}]}
                             if s.load_balancer_ip else {}}}
                 for s in lab.services if _ns_ok(s.namespace, ns)]
    elif kind == "endpoints":
        eps = S.all_endpoints(lab)
        items = [{"kind": "Endpoints", "metadata": {"name": s.name, "namespace": s.namespace},
                  "subsets": [{"addresses": [{"ip": e.ip, "nodeName": e.node,
                                              "targetRef": {"kind": "Pod", "name": e.pod}}
                                             for e in eps[s.key] if e.port_name == p.name],
                               "ports": [{"name": p.name, "port": next(
                                   (e.port for e in eps[s.key] if e.port_name == p.name), None),
                                   "protocol": p.protocol}]} for p in s.ports]}
                 for s in lab.services if _ns_ok(s.namespace, ns)]
    elif kind == "deployments":
        items = [{"kind": "Deployment", "metadata": {"name": d.name, "namespace": d.namespace},
                  "spec": {"replicas": d.replicas, "selector": {"matchLabels": dict(d.labels)}},
                  "status": {"replicas": d.replicas, "pods": list(d.pods)}}
                 for d in lab.deployments if _ns_ok(d.namespace, ns)]
    elif kind in ROUTES:
        api = "networking.k8s.io/v1" if kind == "ingress" else "gateway.networking.k8s.io/v1"
        items = [{"apiVersion": api, "kind": {"ingress": "Ingress", "gateway": "Gateway",
                                              "httproute": "HTTPRoute"}[kind],
                  "metadata": {"name": o.name, "namespace": o.namespace},
                  "spec": o.model_dump(by_alias=True, exclude={"name", "namespace"},
                                       exclude_none=True)}
                 for o in _routes(lab, kind) if _ns_ok(o.namespace, ns)]
    return {"apiVersion": "v1", "kind": "List", "items": items}


# ---------------------------------------------------------------- commands


def _lab_and(words: List[str], count: int, usage: str) -> tuple[str, list[str]]:
    """[LAB] then `count` words: LAB may be left out when one lab is up."""
    if len(words) == count:
        return state.only_lab(None), words
    if len(words) == count + 1:
        return words[0], words[1:]
    raise NetlabError(f"usage: {usage}")


def _load(name: str) -> Lab:
    from ..runtime import running
    return running.load_up(name)


def _running(lab: Lab) -> dict:
    from ..runtime import running
    return running.status(lab).alive


def _born(name: str) -> tuple[float, dict]:
    st = state.LabState(name)
    created = st.info().get("created", time.time())
    return created, dict(st.journal().live.get("born", {}))


def get(words: List[str] = typer.Argument(..., metavar="[LAB] KIND"),
        namespace: Optional[str] = typer.Option("default", "--namespace", "-n",
                                                help="Kubernetes namespace."),
        all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A"),
        output: str = typer.Option("", "--output", "-o", help="wide or json.")) -> None:
    """Show pods, svc, endpoints or deployments of a lab, with kubectl's columns (dns: the cluster
    DNS's records as a zone)."""
    need_root("get")
    name, (kind,) = _lab_and(words, 1, "netlab get [LAB] pods|svc|endpoints|deployments|"
                                       "ingress|gateway|httproute|dns")
    if kind not in KINDS:
        raise NetlabError(f"unknown kind {kind!r}: use pods, svc, endpoints, deployments, "
                          f"ingress, gateway, httproute or dns")
    kind = KINDS[kind]
    lab = _load(name)
    if kind == "dns":     # the cluster DNS's records, as a zone (features/dns)
        from ..features import dns
        if lab.dns is None:
            raise NetlabError(f"lab {name} has no cluster DNS: add `dns: true` to its scenario")
        print(dns.zone(lab), end="")
        return
    ns = None if all_namespaces else namespace
    if output == "json":
        out.print_json(data=as_json(lab, kind, ns))
        return
    if output not in ("", "wide"):
        raise NetlabError(f"-o {output}: use wide or json")
    created, born = _born(name)
    now = time.time()
    born = {p.name: born.get(p.name, created) for p in lab.pods}
    if kind == "pods":
        cols, rows = pod_rows(lab, _running(lab), born, now, ns, output == "wide")
    elif kind == "svc":
        cols, rows = svc_rows(lab, created, now, ns, output == "wide")
    elif kind == "endpoints":
        cols, rows = endpoints_rows(lab, created, now, ns)
    elif kind in ROUTES:
        cols, rows = route_rows(lab, kind, created, now, ns)
    else:
        cols, rows = deployment_rows(lab, _running(lab), created, now, ns)
    if all_namespaces:
        nss = _namespaces_of(lab, kind, ns)
        cols, rows = ("NAMESPACE",) + cols, [(n,) + r for n, r in zip(nss, rows)]
    if not rows:
        out.print(f"No resources found in {namespace} namespace.")
        return
    t = table(*cols)
    for r in rows:
        t.add_row(*r)
    out.print(t)


def _namespaces_of(lab: Lab, kind: str, ns: Optional[str]) -> list[str]:
    if kind in ROUTES:
        return [o.namespace for o in _routes(lab, kind) if _ns_ok(o.namespace, ns)]
    objs = {"pods": lab.pods, "svc": lab.services, "endpoints": lab.services,
            "deployments": lab.deployments}[kind]
    return [o.namespace for o in objs if _ns_ok(o.namespace, ns)]


def scale(words: List[str] = typer.Argument(..., metavar="[LAB] deployment/NAME"),
          replicas: int = typer.Option(..., "--replicas", help="The number of pods.")) -> None:
    """Scale a deployment: new pods start, removed ones stop, every node's rules follow."""
    need_root("scale")
    name, (what,) = _lab_and(words, 1, "netlab scale [LAB] deployment/NAME --replicas N")
    kind, _, dep = what.partition("/")
    if kind not in ("deployment", "deploy", "deployments") or not dep:
        raise NetlabError(f"{what!r}: write deployment/NAME")
    from ..runtime import scale as R
    r = R.scale(name, dep, replicas)
    out.print(f"deployment.apps/{dep} scaled" + (f" (+{', '.join(r.added)})" if r.added else "")
              + (f" (-{', '.join(r.removed)})" if r.removed else ""))


def delete(words: List[str] = typer.Argument(..., metavar="[LAB] pod/NAME")) -> None:
    """Delete a deployment's pod; the deployment replaces it (new name, new IP)."""
    need_root("delete")
    name, (what,) = _lab_and(words, 1, "netlab delete [LAB] pod/NAME")
    kind, _, pod = what.partition("/")
    if kind not in ("pod", "pods", "po") or not pod:
        raise NetlabError(f"{what!r}: write pod/NAME")
    from ..runtime import scale as R
    r = R.delete_pod(name, pod)
    out.print(f'pod "{pod}" deleted' + (f"; replaced by {', '.join(r.added)}" if r.added else "")
              + (f"; {r.conntrack_deleted} stale UDP conntrack entries deleted"
                 if r.conntrack_deleted else ""))


def target_of(lab: Lab, what: str, remote: int):
    """svc/NAME (from the first node, through kube-proxy) or pod/NAME (its localhost)."""
    from ..runtime.portforward import Target
    kind, _, name = what.partition("/")
    if kind in ("svc", "service"):
        ns, _, short = name.rpartition("/")
        svc = next((s for s in lab.services if s.name == short and (not ns or s.namespace == ns)),
                   None)
        if svc is None or svc.headless:
            raise NetlabError(f"lab {lab.name} has no Service {name!r} with a ClusterIP")
        node = lab.nodes[0]
        return Target(node.ns, svc.cluster_ip, remote,
                      f"svc/{svc.name} ({svc.cluster_ip}:{remote}) from {node.name}")
    if kind in ("pod", "po"):
        try:
            pod = lab.pod(name)
        except StopIteration:
            raise NetlabError(f"lab {lab.name} has no pod {name!r}") from None
        return Target(pod.ns, "127.0.0.1", remote, f"pod/{pod.name} (localhost:{remote})")
    raise NetlabError(f"{what!r}: write svc/NAME or pod/NAME")


def port_forward(words: List[str] = typer.Argument(..., metavar="[LAB] svc/NAME|pod/NAME "
                                                                "LOCAL:REMOTE")) -> None:
    """Forward 127.0.0.1:LOCAL to a Service or pod of the lab, until Ctrl-C."""
    need_root("port-forward")
    name, (what, ports) = _lab_and(words, 2, "netlab port-forward [LAB] svc/NAME LOCAL:REMOTE")
    local, _, remote = ports.partition(":")
    if not local.isdigit() or not (remote or local).isdigit():
        raise NetlabError(f"{ports!r}: write LOCAL:REMOTE, like 8080:80")
    target = target_of(_load(name), what, int(remote or local))
    from ..runtime import portforward as F
    try:
        srv = F.listen(int(local))
    except OSError as e:
        raise NetlabError(f"cannot listen on 127.0.0.1:{local}: {e.strerror}") from None
    out.print(f"Forwarding from 127.0.0.1:{local} -> {target.what}  (Ctrl-C stops)")
    F.forward(srv, target, say=out.print)


def register(app: typer.Typer) -> None:
    for fn, cmd in ((get, "get"), (scale, "scale"), (delete, "delete"),
                    (port_forward, "port-forward")):
        app.command(cmd)(fn)
