"""Benchmark of Services: `up` of a lab with S Services of E endpoints each beside the same lab
without Services (same nodes, same deployment pods), measured in the same run; the kube-proxy
rule load (one `nft -f` transaction per node, as `scale` reloads it); and the verify time of the
svc-* rules (on a slice of the Services, since every check runs real clients).

    sudo /opt/netlab/bin/python bench/services.py --services 1000 --endpoints 10

Lab names start with `svc-bench-`; every lab is taken down and checked gone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab import model  # noqa: E402
from netlab.features import services as S  # noqa: E402
from netlab.runtime import lifecycle, running  # noqa: E402


def scenario(nodes: int, groups: int, endpoints: int, services: int, verify_slice: int = 0) -> str:
    """`groups` deployments of `endpoints` replicas (label app=gK); Service i selects group
    i % groups, so each has `endpoints` endpoints. With verify_slice, only that many Services."""
    count = min(services, verify_slice) if verify_slice else services
    lines = ["network: {underlay: 192.168.0.0/16, podCIDR: 10.244.0.0/16, serviceCIDR: 10.96.0.0/12}",
             "nodes:"] + [f"  - name: n{i}" for i in range(1, nodes + 1)]
    lines += ["pods:"] + [f"  - {{name: c{i}, node: n{i}}}" for i in range(1, nodes + 1)]
    lines.append("deployments:")
    for g in range(groups):
        lines.append(f"  - {{name: g{g}, replicas: {endpoints}, labels: {{app: g{g}}}, "
                     f"containers: [{{name: s, image: netexec, port: 8080}}]}}")
    lines.append("services:" if count else "services: []")
    for i in range(count):
        lines.append(f"  - {{name: s{i}, selector: {{app: g{i % groups}}}, "
                     f"ports: [{{port: 80, targetPort: 8080}}]}}")
    return "\n".join(lines) + "\n"


def _up(text: str, tag: str):
    name = f"svc-bench-{tag}-{uuid.uuid4().hex[:4]}"
    lab = model.parse(text, f"{name}.yaml", name)
    started = time.monotonic()
    lifecycle.up(lab)
    return name, lab, time.monotonic() - started


def _down(name: str) -> None:
    lifecycle.down(name)
    left = [ns for ns in os.listdir("/run/netns") if ns.startswith(name + "-")]
    assert not left, f"{name} left {left[:3]}"


def rule_load(lab) -> float:
    """Every node's kube-proxy transaction loaded again (`nft -f`), as scale/delete do."""
    sets = S.rulesets(lab)
    started = time.monotonic()
    for node in lab.nodes:
        r = subprocess.run(["ip", "netns", "exec", node.ns, "nft", "-f", "-"],
                           input=sets[node.name], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[:300]
    return time.monotonic() - started


def verify_services(name: str) -> tuple[float, int, int]:
    from netlab.features import svcchecks
    from netlab.verify import engine
    lab = running.load_up(name)
    checks = [c for r in svcchecks.RULES for c in engine.derive(lab, [r])]
    started = time.monotonic()
    report = engine.run(lab, checks)
    return time.monotonic() - started, len(report.results), len(report.failed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--groups", type=int, default=10, help="deployments the Services share")
    ap.add_argument("--verify-slice", type=int, default=20,
                    help="verify the svc-* rules of a lab with this many Services")
    args = ap.parse_args()
    plain = scenario(args.nodes, args.groups, args.endpoints, 0)
    full = scenario(args.nodes, args.groups, args.endpoints, args.services)
    lab0 = model.parse(full, "x.yaml", "svc-bench-x")
    size = len(S.rulesets(lab0)[lab0.nodes[0].name])
    print(f"lab: {args.nodes} nodes, {args.groups * args.endpoints} deployment pods; "
          f"{args.services} Services x {args.endpoints} endpoints; kube-proxy ruleset "
          f"{size / 1e6:.1f} MB per node")
    started = time.monotonic()
    lab0 = model.parse(full, "x.yaml", "svc-bench-x")
    print(f"parse + allocate + endpoints: {time.monotonic() - started:.2f}s")
    name0, _, t_plain = _up(plain, "plain")
    _down(name0)
    name1, lab1, t_full = _up(full, "svc")
    try:
        t_load = rule_load(lab1)
    finally:
        _down(name1)
    print(f"up without Services: {t_plain:.2f}s")
    print(f"up with {args.services} Services: {t_full:.2f}s ({t_full / t_plain:.2f}x)")
    print(f"rule load, {args.nodes} nodes (one nft -f each): {t_load:.2f}s "
          f"({t_load / args.nodes:.2f}s per node)")
    if args.verify_slice:
        text = scenario(args.nodes, args.groups, args.endpoints, args.services, args.verify_slice)
        name2, _, _ = _up(text, "ver")
        try:
            took, n, bad = verify_services(name2)
        finally:
            _down(name2)
        print(f"verify of the svc-* rules, {args.verify_slice} Services: {n} checks, {bad} "
              f"failed, {took:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
