"""NetworkPolicy in a real lab: rule-load time and verify time for P pods and N policies, each
against the same lab without policies, in the same run.

    sudo /opt/netlab/bin/python bench/netpol.py --pods 100 --policies 50 --nodes 4 [--json]

The lab (`npw-bench-...`, brought down again) has P pods over the nodes and namespaces ns0..ns9,
labelled as bench/netpol_bench.py labels them, each running netexec on TCP 80 (`web`) and UDP
53 (`dns`); the policies are netpol_bench's mix (default deny, AND/OR selectors, ipBlocks, port
ranges, named ports, egress). Figures:
- up: `netlab up` of the whole lab, with and without policies;
- rule load: every node's `table inet netlab-netpol` loaded again with `nft -f` (the
  transaction scale/delete repeats), and the nft text computed from the model;
- verify: every rule (in process, as `netlab verify` runs it) and the `policy` rule alone;
  without policies the lab has no `policy` checks.

Measured 2026-12-01 (2 CPUs shared with other engineers' labs, load average 15-18, kernel 6.18),
100 pods on 10 nodes, 50 policies, one run:
    up                     5.03 s   without 6.80 s   ratio 0.74 (noise: the policies add 10 ops)
    nft text (all nodes)   79 ms, 634 lines
    rule load (nft -f x10) 217 ms   (22 ms a node: what scale/delete adds to a change)
    verify, every rule     368.3 s (53729 checks, 676 failed)
                  without   56.6 s (24090 checks, 463 failed)   ratio 6.51
    verify, rule policy     45.0 s (29700 checks, 601 failed)
Both labs had failures at that load (463 without any policy): probes timing out on an overloaded
machine, and the neighbour (ARP) table shared by every namespace (gc_thresh3 1024) filling with
100 pods probing every pair (an unrelated small lab got ENOBUFS from ping meanwhile). The ratio
comes from the other rules' checks the policies turn unreachable: each costs its full timeout
(fping's retries, curl's connect timeout); the `policy` rule's own 29,700 probes, batched in one
connect.py per pod, take 45 s. 10 nodes rather than 4 keep fewer pods on one bridge, so fewer
neighbour entries per pod. Run it on a machine of your own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netpol_gen import scenario  # noqa: E402  (bench/netpol_gen.py)

from netlab.features.netpol import NetworkPolicies, rulesets  # noqa: E402
from netlab.runtime import running  # noqa: E402
from netlab.verify import engine as V  # noqa: E402


def netlab(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "netlab", *args], check=True, capture_output=True,
                   text=True, cwd=Path(__file__).resolve().parent.parent, timeout=1800)
    return time.perf_counter() - t


def measure(pods: int, policies: int, nodes: int, tmp: Path) -> dict:
    name = f"npw-bench-{uuid.uuid4().hex[:6]}"
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(scenario(name, pods, policies, nodes), indent=1))
    out: dict = {}
    try:
        out["up_s"] = netlab("up", str(path), "--name", name)
        lab = running.load_up(name)
        t = time.perf_counter()
        texts = rulesets(lab) if lab.network_policies else {}
        out["nft_text_s"] = time.perf_counter() - t
        out["nft_lines"] = sum(x.count("\n") for x in texts.values())
        loads = []
        for _ in range(3):
            t = time.perf_counter()
            for op in NetworkPolicies().reload(lab):
                subprocess.run(["ip", "netns", "exec", op.ns, "nft", "-f", "-"], input=op.ruleset,
                               text=True, check=True, capture_output=True)
            loads.append(time.perf_counter() - t)
        out["rule_load_s"] = min(loads)
        checks = V.derive(lab)
        t = time.perf_counter()
        report = V.run(lab, checks)
        out["verify_s"] = time.perf_counter() - t
        out["checks"] = len(checks)
        out["failed"] = len(report.failed)
        mine = [c for c in checks if c.rule == "policy"]
        out["policy_checks"] = len(mine)
        if mine:
            t = time.perf_counter()
            r = V.run(lab, mine)
            out["verify_policy_s"] = time.perf_counter() - t
            out["policy_failed"] = len(r.failed)
    finally:
        subprocess.run([sys.executable, "-m", "netlab", "down", name], capture_output=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=600)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--policies", type=int, default=50)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = Path("/tmp") / f"npw-bench-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        without = measure(a.pods, 0, a.nodes, tmp)
        with_ = measure(a.pods, a.policies, a.nodes, tmp)
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    ratios = {"up": with_["up_s"] / without["up_s"],
              "verify": with_["verify_s"] / without["verify_s"]}
    if a.json:
        print(json.dumps({"pods": a.pods, "policies": a.policies, "nodes": a.nodes,
                          "without": without, "with": with_, "ratios": ratios}, indent=1))
        return
    print(f"{a.pods} pods on {a.nodes} nodes, {a.policies} policies (vs the same lab without)")
    print(f"up                     {with_['up_s']:.2f} s   without {without['up_s']:.2f} s   "
          f"ratio {ratios['up']:.2f}")
    print(f"nft text (all nodes)   {with_['nft_text_s'] * 1000:.0f} ms, {with_['nft_lines']} lines")
    print(f"rule load (nft -f x{a.nodes})  {with_['rule_load_s'] * 1000:.0f} ms")
    print(f"verify, every rule     {with_['verify_s']:.1f} s ({with_['checks']} checks, "
          f"{with_['failed']} failed)   without {without['verify_s']:.1f} s "
          f"({without['checks']} checks, {without['failed']} failed)   "
          f"ratio {ratios['verify']:.2f}")
    print(f"verify, rule policy    {with_.get('verify_policy_s', 0):.1f} s "
          f"({with_['policy_checks']} checks, {with_.get('policy_failed', 0)} failed)")


if __name__ == "__main__":
    main()
