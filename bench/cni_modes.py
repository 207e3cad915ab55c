"""`up` and `down` of one lab under each network.cni mode, in the same run: builtin (netlink in
process), netlab (netlab-cni + portmap per pod) and reference (Debian's bridge + host-local +
portmap + loopback per pod). Each is timed from the shell (`netlab up`/`down`, imports and output
included), interleaved over the runs, and reported with its ratio to builtin from the same run.

    sudo /opt/netlab/bin/python bench/cni_modes.py --nodes 10 --pods-per-node 10 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from gen import scenario  # noqa: E402

MODES = ("builtin", "netlab", "reference")


def timed(*args: str) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "netlab", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"netlab {' '.join(args)} failed: {proc.stderr.strip()}")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods-per-node", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run it as root (sudo): it brings labs up")
    samples: dict[str, dict[str, list[float]]] = {m: {"up": [], "down": []} for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for mode in MODES:
            text = scenario(args.nodes, args.pods_per_node, name=f"bcni-{mode}")
            files[mode] = Path(tmp) / f"{mode}.yaml"
            files[mode].write_text(text.replace("network:\n", f"network:\n  cni: {mode}\n", 1))
        for _ in range(args.runs):
            for mode in MODES:
                name = f"bcni-{mode[:3]}-{os.getpid()}"
                samples[mode]["up"].append(timed("up", str(files[mode]), "--name", name, "--json"))
                samples[mode]["down"].append(timed("down", name, "--json"))
    pods = args.nodes * args.pods_per_node
    out = {"pods": pods, "runs": args.runs, "modes": {}}
    for mode in MODES:
        up = statistics.median(samples[mode]["up"])
        down = statistics.median(samples[mode]["down"])
        ratios = [u / b for u, b in zip(samples[mode]["up"], samples["builtin"]["up"])]
        out["modes"][mode] = {"up_s": round(up, 3), "down_s": round(down, 3),
                              "up_per_pod_ms": round(up / pods * 1000, 2),
                              "up_vs_builtin": round(statistics.median(ratios), 2),
                              "samples": samples[mode]}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{pods} pods, {args.runs} runs, medians, `netlab up`/`down` from the shell")
    print(f"{'mode':10} {'up':>8} {'down':>8} {'per pod':>9} {'up / builtin':>13}")
    for mode, r in out["modes"].items():
        print(f"{mode:10} {r['up_s']:>7.2f}s {r['down_s']:>7.2f}s {r['up_per_pod_ms']:>7.1f}ms "
              f"{r['up_vs_builtin']:>12.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
