"""Benchmark: netlab up/down of N nodes x M pods against the iproute2 script of the same plan,
and against Mininet for the same number of hosts, on this machine.

    sudo /opt/netlab/bin/python bench/run.py --nodes 10 --pods-per-node 100 [--runs 3] [--json]

Each run, on one generated scenario (bench/gen.py), measures in this order:
  * netlab: `lifecycle.up` then `lifecycle.down` in a child Python process (load + plan + apply;
    interpreter start and imports excluded), and that process's peak RSS (ru_maxrss);
  * verify: `netlab verify LAB` timed between up and down when netlab has that command (hook:
    `verify_seconds`); null until then;
  * the script: `netlab plan` for the same scenario under another lab name, run by bash with
    iproute2 (timed), then removed with `netlab down` (timed as ip_script_down_s);
  * Mininet: `mn --topo single,HOSTS --switch lxbr --controller none --test none` (up and down
    together), where `mn` is installed and HOSTS <= --mininet-max-hosts.
Between phases it waits for the kernel to free the last phase's namespaces (/proc/slabinfo).
Figures are medians over the runs; ratios are taken within each run, then their median.
Lab names start with `sp-bench-`; nothing is left behind (every lab is brought down).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import gen  # noqa: E402


def _netlab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netlab", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------- the child that runs netlab


def child(scenario: str, name: str) -> None:
    """Run in a fresh process: up, then down, of `scenario`; print timings and peak RSS as JSON.

    With NETLAB_BENCH_HOLD set, waits for a line on stdin between up and down (for verify).
    """
    from netlab import model
    from netlab.runtime import lifecycle
    out: dict = {}
    started = time.perf_counter()
    try:
        lab = model.load(scenario, name)
        lifecycle.up(lab)
        out["up_s"] = time.perf_counter() - started
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if os.environ.get("NETLAB_BENCH_HOLD"):
            print(json.dumps({"ready": True}), flush=True)
            sys.stdin.readline()
    except Exception as e:  # reported, and the lab still goes down below
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        started = time.perf_counter()
        lifecycle.down(name)
        out["down_s"] = time.perf_counter() - started
    print(json.dumps(out), flush=True)


def run_netlab(scenario: str, name: str, verify: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", scenario, name]
    if not verify:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
        lines = proc.stdout.strip().splitlines()
        result = json.loads(lines[-1]) if lines else {"error": proc.stderr.strip()[-500:]}
        result["verify_s"] = None
        return result
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "NETLAB_BENCH_HOLD": "1"})
    first = proc.stdout.readline()
    verify_s = verify_seconds(name) if '"ready"' in first else None
    rest, _ = proc.communicate("\n", timeout=900)
    lines = (first + rest).strip().splitlines()
    result = json.loads(lines[-1])
    result["verify_s"] = verify_s
    return result


# ---------------------------------------------------------------- hooks and the others


def verify_available() -> bool:
    """Whether this netlab has a `verify` command (issue: verify; another engineer's work)."""
    return _netlab("verify", "--help", timeout=60).returncode == 0


def verify_seconds(name: str) -> float | None:
    """HOOK for `verify_s`: time `netlab verify LAB` on the lab that is up; None if it fails."""
    started = time.perf_counter()
    proc = _netlab("verify", name, timeout=900)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"bench: netlab verify {name} exited {proc.returncode}: "
              f"{(proc.stderr or proc.stdout).strip()[-300:]}", file=sys.stderr)
        return None
    return took


def run_script(scenario: str, name: str, workdir: str) -> dict:
    script = Path(workdir) / f"{name}.sh"
    plan = _netlab("plan", scenario, "--name", name)
    if plan.returncode != 0:
        return {"ip_script_error": plan.stderr.strip()}
    script.write_text(plan.stdout)
    started = time.perf_counter()
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
    up_s = time.perf_counter() - started
    started = time.perf_counter()
    _netlab("down", name)
    down_s = time.perf_counter() - started
    out = {"ip_script_up_s": up_s, "ip_script_down_s": down_s}
    if proc.returncode != 0:
        out = {"ip_script_error": proc.stderr.strip()[-300:]}
    return out


def mininet_reason(hosts: int, max_hosts: int) -> str | None:
    """Why Mininet is not measured, or None when it can be."""
    if not shutil.which("mn"):
        return "mininet is not installed (apt-get install -y mininet bridge-utils)"
    if not shutil.which("brctl"):
        return "--switch lxbr needs brctl (apt-get install -y bridge-utils)"
    if hosts < 1:
        return "no hosts"
    if hosts > max_hosts:
        return f"{hosts} hosts is more than --mininet-max-hosts {max_hosts}"
    return None


def run_mininet(hosts: int) -> dict:
    """Mininet's own up and down for `hosts` hosts on one Linux bridge, no controller, no test.

    Mininet puts its switch (a bridge named s1 and its ports) in the root namespace while it runs
    and removes them itself when it stops.
    """
    started = time.perf_counter()
    proc = subprocess.run(["mn", "--topo", f"single,{hosts}", "--switch", "lxbr", "--controller",
                           "none", "--test", "none"], capture_output=True, text=True, timeout=1800,
                          cwd=tempfile.gettempdir())
    took = time.perf_counter() - started
    if proc.returncode != 0 or "*** Done" not in proc.stderr + proc.stdout:
        return {"mininet_error": (proc.stderr + proc.stdout).strip()[-300:]}
    return {"mininet_up_down_s": took}


def live_netns() -> int | None:
    """Network namespaces alive in the kernel (the net_namespace slab), or None if unknown."""
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def settle(before: int | None, timeout: float = 60.0) -> None:
    """Wait until the kernel has freed the namespaces of the last phase (it does so in the
    background after `down`), so one phase's clean-up is not billed to the next."""
    deadline = time.monotonic() + timeout
    while before is not None and time.monotonic() < deadline:
        now = live_netns()
        if now is None or now <= before + 20:
            return
        time.sleep(0.2)


# ---------------------------------------------------------------- one benchmark


def bench(nodes: int, per_node: int, runs: int, netexec: bool, mininet_max: int,
          no_mininet: bool, no_script: bool) -> dict:
    pods = nodes * per_node
    verify = verify_available()
    mn_why = "skipped (--no-mininet)" if no_mininet else mininet_reason(pods, mininet_max)
    samples = []
    with tempfile.TemporaryDirectory(prefix="netlab-bench-") as tmp:
        scenario = Path(tmp) / f"bench-{nodes}x{per_node}.yaml"
        scenario.write_text(gen.scenario(nodes, per_node, netexec, "sp-bench"))
        for _ in range(runs):
            tag = uuid.uuid4().hex[:6]
            quiet = live_netns()
            sample = run_netlab(str(scenario), f"sp-bench-{tag}", verify)
            settle(quiet)
            if not no_script:
                sample.update(run_script(str(scenario), f"sp-bench-{tag}s", tmp))
                settle(quiet)
                if "ip_script_up_s" in sample and "up_s" in sample:
                    sample["ratio_up_netlab_script"] = sample["up_s"] / sample["ip_script_up_s"]
            if mn_why is None:
                sample.update(run_mininet(pods))
                settle(quiet)
                if "mininet_up_down_s" in sample and "up_s" in sample:
                    sample["ratio_mininet_netlab"] = sample["mininet_up_down_s"] / \
                        (sample["up_s"] + sample["down_s"])
            samples.append(sample)

    def median(key: str):
        values = [s[key] for s in samples if s.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    result = {"nodes": nodes, "pods_per_node": per_node, "pods": pods,
              "namespaces": pods + nodes + 1, "netexec": netexec, "runs": runs}
    for key in ("up_s", "verify_s", "down_s", "peak_rss_mb", "ip_script_up_s",
                "ip_script_down_s", "ratio_up_netlab_script", "mininet_up_down_s",
                "ratio_mininet_netlab"):
        result[key] = median(key)
    result["up_ms_per_pod"] = round(1000 * result["up_s"] / pods, 3) if pods and result["up_s"] \
        else None
    if not verify:
        result["verify_note"] = "netlab has no verify command yet (hook: bench/run.py verify_seconds)"
    if mn_why:
        result["mininet_note"] = mn_why
    errors = sorted({s[k] for s in samples for k in s if k.endswith("error")})
    if errors:
        result["errors"] = errors
    result["samples"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}
                         for s in samples]
    return result


def table(r: dict) -> str:
    def f(v, unit=""):
        return "-" if v is None else f"{v}{unit}"
    rows = [("pods", r["pods"]), ("namespaces", r["namespaces"]), ("runs", r["runs"]),
            ("up", f(r["up_s"], " s")), ("up per pod", f(r["up_ms_per_pod"], " ms")),
            ("verify", f(r["verify_s"], " s")), ("down", f(r["down_s"], " s")),
            ("peak RSS", f(r["peak_rss_mb"], " MB")),
            ("iproute2 script up", f(r["ip_script_up_s"], " s")),
            ("netlab / script (up)", f(r["ratio_up_netlab_script"])),
            ("mininet up+down", f(r["mininet_up_down_s"], " s")),
            ("mininet / netlab (up+down)", f(r["ratio_mininet_netlab"]))]
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    for note in ("verify_note", "mininet_note"):
        if note in r:
            text += f"\n{note.split('_')[0]}: {r[note]}"
    for e in r.get("errors", []):
        text += f"\nerror: {e}"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2])
        return 0
    ap = argparse.ArgumentParser(description="netlab up/down against iproute2 and Mininet.")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods-per-node", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3, help="runs; figures are medians")
    ap.add_argument("--netexec", action="store_true", help="give each pod a netexec container")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--mininet-max-hosts", type=int, default=200,
                    help="skip Mininet above this many hosts (it takes ~0.1 s a host)")
    ap.add_argument("--no-mininet", action="store_true")
    ap.add_argument("--no-script", action="store_true", help="skip the iproute2 script")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run.py builds real labs and needs root: run it with sudo", file=sys.stderr)
        return 2
    try:
        gen.scenario(args.nodes, args.pods_per_node)
    except ValueError as e:
        ap.error(str(e))
    result = bench(args.nodes, args.pods_per_node, max(1, args.runs), args.netexec,
                   args.mininet_max_hosts, args.no_mininet, args.no_script)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
