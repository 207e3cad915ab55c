"""Benchmark: netlab up/down of N nodes x M pods against the iproute2 script of the same plan,
and against Mininet for the same number of hosts, on this machine.

    sudo /opt/netlab/bin/python bench/run.py --nodes 10 --pods-per-node 100 [--runs 3] [--json]

Each run, on one generated scenario (bench/gen.py), measures in this order:
  * netlab: `lifecycle.up` then `lifecycle.down` in a child Python process (load + plan + apply;
    interpreter start and imports excluded), and that process's peak RSS (ru_maxrss);
  * verify: `netlab verify LAB` timed between up and down, in the mode a user gets by default
    (covering above 100 pods) and, up to MESH_AFFORDABLE pods, with --mesh; each bounded;
  * the CLI: `netlab up` and `netlab down` from the shell (interpreter, imports, parsing and
    printing included) beside the lab's own apply time that `up` prints;
  * the script: `netlab plan` for the same scenario under another lab name, run by sh with
    iproute2 (timed), then removed by a script (`ip netns pids` killed, `ip -batch` netns del);
    ratio_script_cli compares both from the shell, up+down;
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


def run_netlab(scenario: str, name: str, verify: bool, mesh: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", scenario, name]
    if not verify:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
        except subprocess.TimeoutExpired:
            _netlab("down", name, timeout=300)
            return {"error": "netlab up/down took more than 900 s", "verify_s": None}
        lines = proc.stdout.strip().splitlines()
        result = json.loads(lines[-1]) if lines else {"error": proc.stderr.strip()[-500:]}
        result["verify_s"] = None
        return result
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "NETLAB_BENCH_HOLD": "1"})
    result: dict = {}
    lines: list[str] = []
    try:
        first = _readline(proc, 900)
        lines.append(first)
        if '"ready"' in first:
            result.update(verify_seconds(name, mesh))
        proc.stdin.write("\n")
        proc.stdin.close()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            line = _readline(proc, max(1.0, deadline - time.monotonic()))
            if not line:
                break
            lines.append(line)
        proc.wait(timeout=60)
        result = {**json.loads([l for l in lines if l.strip()][-1]), **result}
    except (subprocess.TimeoutExpired, ValueError, IndexError, OSError) as e:
        proc.kill()
        proc.wait()
        _netlab("down", name, timeout=300)
        result["error"] = f"netlab up/down did not finish: {type(e).__name__}: {e}; " \
                          f"its output: {''.join(lines)[-300:]!r}"
    result.setdefault("verify_s", None)
    return result


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """The child's next line, "" at its end or after `timeout` seconds (never a wait without
    end): a thread reads the pipe into a queue, so buffered lines are never missed."""
    import queue
    import threading
    lines = getattr(proc, "_bench_lines", None)
    if lines is None:
        lines = proc._bench_lines = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:
                lines.put(line)
            lines.put("")
        threading.Thread(target=pump, daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


# ---------------------------------------------------------------- hooks and the others


def verify_available() -> bool:
    """Whether this netlab has a `verify` command (issue: verify; another engineer's work)."""
    return _netlab("verify", "--help", timeout=60).returncode == 0


VERIFY_TIMEOUT = 600.0      # s: a verify that takes longer is reported as such, never waited on
MESH_AFFORDABLE = 400       # pods: verify --mesh is timed too up to this size


def verify_seconds(name: str, mesh: bool = False) -> dict:
    """Time `netlab verify LAB` (the mode a user gets by default) and, with `mesh`,
    `netlab verify LAB --mesh`, each bounded by VERIFY_TIMEOUT; the checks, failures and mode."""
    out: dict = {}
    runs = [("verify", ())] + [("verify_mesh", ("--mesh",))] * mesh
    for key, extra in runs:
        started = time.perf_counter()
        try:
            proc = _netlab("verify", name, "--json", *extra, timeout=VERIFY_TIMEOUT)
        except subprocess.TimeoutExpired:
            out[f"{key}_error"] = f"netlab verify {' '.join(extra)} took over {VERIFY_TIMEOUT:g} s"
            continue
        out[f"{key}_s"] = time.perf_counter() - started
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            out[f"{key}_error"] = (proc.stderr or proc.stdout).strip()[-300:]
            continue
        out.update({f"{key}_checks": data["checks"], f"{key}_failed": data["failed"],
                    f"{key}_mode": data.get("mode", ""), f"{key}_pairs": data.get("pairs"),
                    f"{key}_exit": proc.returncode})
    return out


def run_cli(scenario: str, name: str) -> dict:
    """`netlab up` and `netlab down` from the shell, as a user types them (interpreter start,
    imports, parsing, printing included), and the lab's own apply time `up` prints."""
    started = time.perf_counter()
    try:
        up = _netlab("up", scenario, "--name", name, timeout=900)
    except subprocess.TimeoutExpired:
        _netlab("down", name, timeout=300)
        return {"cli_error": "netlab up took more than 900 s"}
    up_s = time.perf_counter() - started
    started = time.perf_counter()
    _netlab("down", name, timeout=300)
    down_s = time.perf_counter() - started
    if up.returncode != 0:
        return {"cli_error": up.stderr.strip()[-300:]}
    import re
    m = re.search(r"operations in ([0-9.]+)s", up.stdout)
    return {"cli_up_s": up_s, "cli_down_s": down_s, "cli_apply_s": float(m.group(1)) if m else None}


def run_script(scenario: str, name: str, workdir: str) -> dict:
    """The plan as an iproute2 script run by sh (`netlab plan | sh`), then removed by a script
    too: each namespace's processes killed (`ip netns pids`), the namespaces deleted in one
    `ip -batch`."""
    script = Path(workdir) / f"{name}.sh"
    plan = _netlab("plan", scenario, "--name", name)
    if plan.returncode != 0:
        return {"ip_script_error": plan.stderr.strip()}
    script.write_text(plan.stdout)
    spaces = [line.split()[3] for line in plan.stdout.splitlines()
              if line.startswith("ip netns add ")]
    undo = Path(workdir) / f"{name}-down.sh"
    undo.write_text("for ns in " + " ".join(spaces) + "; do ip netns pids $ns; done | "
                    "xargs -r kill -9\n" + "ip -batch - <<'EOF'\n" +
                    "".join(f"netns del {ns}\n" for ns in spaces) + "EOF\n")
    # A lab built by a script has no netlab record, so a `netlab clean` elsewhere would take it:
    # hold the lock the test suite's clean takes exclusively (tests/conftest.py), shared.
    import fcntl
    lock = os.open("/tmp/netlab-tests-clean.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_SH)
    try:
        started = time.perf_counter()
        try:
            proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            proc = None
        up_s = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run(["sh", str(undo)], capture_output=True, text=True, timeout=300)
        down_s = time.perf_counter() - started
    finally:
        os.close(lock)
    _netlab("down", name, timeout=300)     # its state, and anything the script left
    if proc is None or proc.returncode != 0:
        return {"ip_script_error": "timeout" if proc is None else proc.stderr.strip()[-300:]}
    return {"ip_script_up_s": up_s, "ip_script_down_s": down_s}


def mininet_reason(hosts: int, max_hosts: int) -> str | None:
    """Why Mininet is not measured, or None when it can be."""
    if not shutil.which("mn"):
        return ("mininet is not installed (apt-get install -y mininet bridge-utils; its switch "
                "and host links live in the root namespace, so on a shared machine the iproute2 "
                "script stands in for it)")
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
            sample = run_netlab(str(scenario), f"sp-bench-{tag}", verify,
                                mesh=pods <= MESH_AFFORDABLE)
            settle(quiet)
            sample.update(run_cli(str(scenario), f"sp-bench-{tag}c"))
            settle(quiet)
            if "cli_up_s" in sample and sample.get("cli_apply_s"):
                sample["ratio_cli_up_apply"] = sample["cli_up_s"] / sample["cli_apply_s"]
            if not no_script:
                sample.update(run_script(str(scenario), f"sp-bench-{tag}s", tmp))
                settle(quiet)
                if "ip_script_up_s" in sample and "up_s" in sample:
                    sample["ratio_up_netlab_script"] = sample["up_s"] / sample["ip_script_up_s"]
                if "ip_script_up_s" in sample and "cli_up_s" in sample:
                    # both from the shell: the script's up+down over netlab's CLI up+down
                    sample["ratio_script_cli"] = (sample["ip_script_up_s"] +
                                                  sample["ip_script_down_s"]) / \
                        (sample["cli_up_s"] + sample["cli_down_s"])
            if mn_why is None:
                sample.update(run_mininet(pods))
                settle(quiet)
                if "mininet_up_down_s" in sample and "up_s" in sample:
                    sample["ratio_mininet_netlab"] = sample["mininet_up_down_s"] / \
                        (sample["up_s"] + sample["down_s"])
                if "mininet_up_down_s" in sample and "cli_up_s" in sample:
                    sample["ratio_mininet_cli"] = sample["mininet_up_down_s"] / \
                        (sample["cli_up_s"] + sample["cli_down_s"])
            samples.append(sample)

    def median(key: str):
        values = [s[key] for s in samples if s.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    result = {"nodes": nodes, "pods_per_node": per_node, "pods": pods,
              "namespaces": pods + nodes + 1, "netexec": netexec, "runs": runs}
    for key in ("up_s", "verify_s", "verify_checks", "verify_failed", "verify_pairs",
                "verify_mesh_s", "verify_mesh_checks", "verify_mesh_failed", "down_s",
                "peak_rss_mb", "cli_up_s", "cli_down_s", "cli_apply_s", "ratio_cli_up_apply",
                "ip_script_up_s", "ip_script_down_s", "ratio_up_netlab_script",
                "ratio_script_cli", "mininet_up_down_s", "ratio_mininet_netlab",
                "ratio_mininet_cli"):
        result[key] = median(key)
    result["verify_mode"] = next((s["verify_mode"] for s in samples if s.get("verify_mode")), None)
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
            ("down", f(r["down_s"], " s")), ("peak RSS", f(r["peak_rss_mb"], " MB")),
            ("verify (default mode)", f(r["verify_s"], " s") + f" {r['verify_checks'] or '-'} "
                                      f"checks, {f(r['verify_failed'])} failed"),
            ("  mode", r.get("verify_mode") or "-"),
            ("verify --mesh", f(r["verify_mesh_s"], " s") + f" {r['verify_mesh_checks'] or '-'} "
                              f"checks, {f(r['verify_mesh_failed'])} failed"),
            ("CLI up (shell)", f(r["cli_up_s"], " s")),
            ("CLI down (shell)", f(r["cli_down_s"], " s")),
            ("lab's own apply (up says)", f(r["cli_apply_s"], " s")),
            ("CLI up / apply", f(r["ratio_cli_up_apply"])),
            ("iproute2 script up", f(r["ip_script_up_s"], " s")),
            ("iproute2 script down", f(r["ip_script_down_s"], " s")),
            ("netlab / script (up, in process)", f(r["ratio_up_netlab_script"])),
            ("script / netlab CLI (up+down, shell)", f(r["ratio_script_cli"])),
            ("mininet up+down", f(r["mininet_up_down_s"], " s")),
            ("mininet / netlab CLI (up+down)", f(r["ratio_mininet_cli"]))]
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
