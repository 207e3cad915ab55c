"""Benchmark: verify's full pod-to-pod mesh on an N-pod lab, against baselines from the same run.

    sudo /opt/netlab/bin/python bench/verify_mesh.py [--pods 100] [--nodes 4] [--workers W]

Generates an N-pod scenario in a temporary file, brings it up, then times (wall clock):
  - baseline: one `nsenter --net=... true` and one `ip netns exec NS true` (the cost of a process
    launched in a namespace), and one `ping -c1` plus one `curl` between two pods;
  - verify of the default rules, pod-to-pod only (--only pod-pod-same-node/cross-node), and the
    whole lab, run through the real CLI (`python3 -m netlab verify`) and through the API.
Prints each figure in seconds and as ratios: time per pair against a single launch, and the mesh
against doing each probe with its own ping/curl process. Tests never time; this script does.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab import model, verify
from netlab.runtime import lifecycle  # noqa: E402
from netlab.runtime.state import LabState  # noqa: E402


def scenario(pods: int, nodes: int) -> str:
    lines = ["name: mesh", "nodes:"]
    lines += [f"  - name: n{i + 1}" for i in range(nodes)]
    lines.append("pods:")
    for p in range(pods):
        lines += [f"  - name: p{p + 1}", f"    node: n{p % nodes + 1}",
                  "    containers: [{name: server, image: netexec, port: 8080}]"]
    return "\n".join(lines) + "\n"


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_seconds(lab_name: str) -> float:
    """CPU time used so far by this process, its waited-for children, and the lab's servers."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        use = resource.getrusage(who)
        total += use.ru_utime + use.ru_stime
    for pid in LabState(lab_name).journal().pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--name", default=f"vf-bench-{os.getpid()}")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmark builds a lab", file=sys.stderr)
        return 2

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(scenario(args.pods, args.nodes))
    lab = model.load(f.name, args.name)
    try:
        start = time.perf_counter()
        lifecycle.up(lab)
        up_s = time.perf_counter() - start
        a, b = lab.pods[0], lab.pods[-1]
        launch_nsenter = timed(lambda: run("nsenter", f"--net=/run/netns/{a.ns}", "true"), 20)
        launch_ip = timed(lambda: run("ip", "netns", "exec", a.ns, "true"), 20)
        # The first probes wait for the servers; take the best of several once they listen.
        verify.wait_ready(lab, {s for p in lab.pods for s in verify.servers_of(p)})
        one_ping = timed(lambda: run("ip", "netns", "exec", a.ns, "ping", "-c1", "-W1", b.ip), 10)
        one_curl = timed(lambda: run("ip", "netns", "exec", a.ns, "curl", "-s",
                                     f"http://{b.ip}:8080/clientip"), 10)

        mesh_rules = ("pod-pod-same-node", "pod-pod-cross-node")
        checks = verify.derive(lab, mesh_rules)
        pairs = args.pods * (args.pods - 1)
        report = None

        def api():
            nonlocal report
            report = verify.run(lab, checks, workers=args.workers)

        cpu0 = cpu_seconds(lab.name)
        mesh_api = timed(api, 1)
        mesh_cpu = cpu_seconds(lab.name) - cpu0
        mesh_api = min(mesh_api, timed(api, 1))
        cli_mesh = timed(lambda: run(sys.executable, "-m", "netlab", "verify", lab.name, "--json",
                                     "--only", mesh_rules[0], "--only", mesh_rules[1]))
        all_checks = verify.derive(lab)
        full_api = timed(lambda: verify.run(lab, all_checks, workers=args.workers))
        default = model.load(None, f"{args.name}-d")
        lifecycle.up(default)
        try:
            default_cli = timed(lambda: run(sys.executable, "-m", "netlab", "verify", default.name),
                                3)
            default_api = timed(lambda: verify.run(default, verify.derive(default)), 3)
        finally:
            lifecycle.down(default.name)
    finally:
        lifecycle.down(lab.name)
        os.unlink(f.name)

    failed = len(report.failed) if report else -1
    for r in (report.failed if report else [])[:5]:
        print(f"FAILED {r.check.rule} {r.check.src} -> {r.check.dst} {r.check.method}: {r.reason}")
    naive = pairs * (one_ping + one_curl)
    print(f"lab: {args.pods} pods on {args.nodes} nodes, up in {up_s:.2f}s; "
          f"{os.cpu_count()} CPUs, workers {args.workers or verify.workers_default()}")
    print(f"baseline: nsenter true {launch_nsenter * 1e3:.2f} ms, ip netns exec true "
          f"{launch_ip * 1e3:.2f} ms, one ping {one_ping * 1e3:.2f} ms, one curl "
          f"{one_curl * 1e3:.2f} ms")
    print(f"mesh: {pairs} pairs, {len(checks)} checks (ping + /clientip), {failed} failed")
    print(f"  verify API  {mesh_api:6.2f} s  = {mesh_api / pairs * 1e3:.3f} ms per pair "
          f"= {mesh_api / pairs / launch_ip:.3f}x one `ip netns exec true`")
    print(f"  verify CLI  {cli_mesh:6.2f} s  (with Python start-up and JSON output)")
    print(f"  CPU used    {mesh_cpu:6.2f} s  (verify, its fping/curl, the lab's servers; on "
          f"{os.cpu_count()} idle CPUs that is >= {mesh_cpu / (os.cpu_count() or 1):.2f} s wall; "
          f"load now {os.getloadavg()[0]:.1f})")
    print(f"  one process per probe would take ~{naive:.1f} s: verify is {naive / mesh_api:.0f}x "
          f"faster")
    print(f"whole lab: {len(all_checks)} checks in {full_api:.2f} s (API)")
    print(f"default three-node lab: verify CLI {default_cli:.2f} s wall, API {default_api:.3f} s "
          f"= {default_api / launch_ip:.0f}x one `ip netns exec true`")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
