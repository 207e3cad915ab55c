"""The Ingress feature's fault of the break-it exercises (core.fault): one path of one Ingress
with its pathType flipped (Prefix to Exact, or Exact to Prefix) in the controller's nginx.conf,
and nginx reloaded, as when an Ingress is applied with the wrong pathType and the controller
writes its conf again.

nginx has a Prefix path /api as two locations, `location = /api` and `location /api/` (so /apix
is not taken), an Exact one as the first only: the flip adds or removes `location /api/`, and a
request below /api/ is taken by another location (the host's `location /`, its default backend
or 404). Which verify checks then fail is the flipped Ingress's routing table asked the way the
checks' expectations are (route_request), against what each check expects.

A path is a target when its flip changes the outcome of at least one check, every changed outcome
is certain (not two Services sharing pods, which would leave it to kube-proxy's choice), and the
conf changes by that one `location PATH/` line (what verify's reason names): not `/`, not a path
written with a trailing `/`, not one that another rule of the same host also serves as Prefix.
"""

from __future__ import annotations

import shlex
from typing import Optional

from ...core.fault import Broken, Fault
from ...core.lab import Lab
from ...core.ops import NginxReload, WriteFile
from . import LISTEN_PORT, conf_text, resolver, table_of
from .conf import nginx_argv
from .spec import INGRESS_CLASS, IngressConfig
from .table import RoutingTable, build_table, route_request

FLIP = {"Prefix": "Exact", "Exact": "Prefix"}


def paths(cfg: IngressConfig) -> dict[str, tuple[int, int, int]]:
    """Every Prefix or Exact path of the controller's Ingresses (not `/`, not ending in `/`) by
    its target name, INGRESS/PATH (`shop/api`: Ingress shop, path /api; NAMESPACE/INGRESS/PATH
    when two namespaces have an Ingress of that name), as (ingress, rule, path) indexes; a path
    that comes again (another host of the same Ingress) is named once, by its first."""
    ings = [ing for ing in cfg.ingresses if ing.ingressClassName in (None, INGRESS_CLASS)]
    names = [ing.name for ing in ings]
    out: dict[str, tuple[int, int, int]] = {}
    for i, ing in enumerate(cfg.ingresses):
        if ing not in ings:
            continue
        who = ing.name if names.count(ing.name) == 1 else f"{ing.namespace}/{ing.name}"
        for r, rule in enumerate(ing.rules):
            for p, path in enumerate(rule.http.paths if rule.http else []):
                if path.pathType in FLIP and path.path != "/" and not path.path.endswith("/"):
                    out.setdefault(f"{who}{path.path}", (i, r, p))
    return out


def flipped(cfg: IngressConfig, at: tuple[int, int, int]) -> IngressConfig:
    """The config with that one path's pathType flipped."""
    i, r, p = at
    ing = cfg.ingresses[i]
    rule = ing.rules[r]
    ps = list(rule.http.paths)
    ps[p] = ps[p].model_copy(update={"pathType": FLIP[ps[p].pathType]})
    rules = list(ing.rules)
    rules[r] = rule.model_copy(update={"http": rule.http.model_copy(update={"paths": ps})})
    ings = list(cfg.ingresses)
    ings[i] = ing.model_copy(update={"rules": rules})
    return cfg.model_copy(update={"ingresses": ings})


def _signature(table: RoutingTable) -> dict:
    """What each location of each server does: its candidates' headers and answers."""
    return {(s.port, s.host, loc.op, loc.path):
            tuple((c.headers, c.status, c.backends) for c in loc.candidates)
            for s in table.servers for loc in s.locations}


class IngressPathType(Fault):
    name = "ingress-path-type"
    summary = ("an Ingress path's pathType flipped (Prefix <-> Exact) in the controller's "
               "nginx.conf: the requests below it go to another location")
    on = "path"
    lesson = "Ingress"

    def _at(self, lab: Lab, target: str) -> tuple[int, int, int]:
        return paths(lab.ingress.config)[target]

    def _path(self, lab: Lab, target: str) -> str:
        i, r, p = self._at(lab, target)
        return lab.ingress.config.ingresses[i].rules[r].http.paths[p].path

    def table(self, lab: Lab, target: str) -> RoutingTable:
        """The routing table of the flipped Ingress."""
        cfg = flipped(lab.ingress.config, self._at(lab, target))
        return build_table(cfg, resolver(lab), listen_port=LISTEN_PORT)

    def targets(self, lab: Lab) -> list[str]:
        if getattr(lab, "ingress", None) is None:
            return []
        from .checks import rule_gateway, rule_ingress
        checks = rule_ingress(lab) + rule_gateway(lab)
        healthy = _signature(table_of(lab))
        out = []
        for target in paths(lab.ingress.config):
            broken = _signature(self.table(lab, target))
            changed = {k for k in healthy.keys() | broken.keys() if healthy.get(k) != broken.get(k)}
            line = ("", self._path(lab, target) + "/")
            if not changed or any(k[2:] != line for k in changed):
                continue
            got = [self.outcome(lab, target, c) for c in checks]
            if None not in got and True in got:
                out.append(target)
        return out

    def make(self, lab: Lab, target: str) -> Broken:
        ctl = lab.ingress
        ns = lab.pod(ctl.pod).ns
        i, _, _ = self._at(lab, target)
        reload = NginxReload(ns, tuple(nginx_argv(ctl.conf_path, ctl.state)))
        look = (f"ip netns exec {ns} {shlex.join(reload.argv)} -T -q | grep -n -A1 'location '")
        fix = (f"netlab show {lab.name} ingress {ctl.config.ingresses[i].name} --config > "
               f"{ctl.conf_path} && {reload.ip()}")
        return Broken((WriteFile(ctl.conf_path, conf_text(lab, self.table(lab, target))), reload),
                      (WriteFile(ctl.conf_path, conf_text(lab)), reload), ns,
                      f"location {self._path(lab, target)}/", look, fix)

    def outcome(self, lab: Lab, target: str, check) -> Optional[bool]:
        """Whether the check fails with the flipped conf: True, False, or None when kube-proxy's
        choice of pod decides."""
        from .checks import METHOD, _expect
        if check.method != METHOD or len(check.data) < 9:
            return False
        mode, host, headers, expect = check.data[:4]
        c = route_request(self.table(lab, target), check.data[8].port, host, check.path,
                          dict(headers))
        now = _expect(lab, tuple((f"{b.namespace}/{b.service}", b.weight) for b in c.backends),
                      c.status)
        if now == expect:
            return False
        if mode == "xff":      # any backend's 200 carries X-Forwarded-For; 404 or 502 does not
            return isinstance(now, int) or any(not ps for _, _, ps in now)
        if isinstance(now, int) or isinstance(expect, int):
            return True
        was = {p for _, _, ps in expect for p in ps}
        if not was:
            return None        # it fails already: no endpoint to answer
        return None if was & {p for _, _, ps in now for p in ps} else True

    def breaks(self, lab: Lab, target: str, check) -> bool:
        return self.outcome(lab, target, check) is True


FAULTS = [IngressPathType()]
