"""How long parsing a scenario takes (every command pays it: `plan`, `status`, `exec`, `verify`),
in process and from the shell, for the default lab and for bench/gen.py's 1,000-pod scenario.
With --against DIR (a checkout of another netlab version) it measures that one too, in the same
run, and prints the ratios.

    /opt/netlab/bin/python bench/parse.py [--against /path/to/old/checkout]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from gen import scenario  # noqa: E402

INNER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from netlab import model
out = {}
for label, path in (("default", None), ("1000 pods", sys.argv[2])):
    model.load(path)                      # the first parse pays the imports: not counted
    times = []
    for _ in range(7):
        started = time.perf_counter()
        model.load(path)
        times.append(time.perf_counter() - started)
    out[label] = min(times)
print(json.dumps(out))
"""


def in_process(checkout: Path, big: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", INNER, str(checkout), str(big)],
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(proc.stdout)


def from_shell(checkout: Path, scenario_path: Path, runs: int = 5) -> float:
    """`netlab plan SCENARIO` (Python start-up, imports, parse, plan, output) from the shell."""
    import time
    best = 1e9
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "netlab", "plan", str(scenario_path)],
                       cwd=checkout, capture_output=True, check=True, timeout=300,
                       env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"})
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", type=Path, help="another checkout, measured in the same run")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.yaml"
        big.write_text(scenario(10, 100))
        default = ROOT / "netlab" / "scenarios" / "three-node.yaml"
        rows = {}
        for label, checkout in (("this", ROOT), ("against", args.against)):
            if checkout is None:
                continue
            r = in_process(checkout, big)
            r["plan default (shell)"] = from_shell(checkout, default)
            r["plan 1000 pods (shell)"] = from_shell(checkout, big)
            rows[label] = r
    keys = ["default", "1000 pods", "plan default (shell)", "plan 1000 pods (shell)"]
    print(f"{'':24}" + "".join(f"{k:>14}" for k in rows) + ("   ratio" if len(rows) == 2 else ""))
    for k in keys:
        vals = [rows[c][k] for c in rows]
        ratio = f"   {vals[1] / vals[0]:.1f}x" if len(vals) == 2 else ""
        print(f"{k:24}" + "".join(f"{v * 1000:>12.1f}ms" for v in vals) + ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
