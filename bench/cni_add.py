"""Time CNI ADD and DEL of N pods on one node, through netlab-cni's chain and the reference chain.

No lab: a node namespace and N pod namespaces (named tcnib-<random>-...), removed at the end.
Pods are ADDed one after the other (as one kubelet starting pods in sequence) or, with --jobs,
that many at once. Run as root from the worktree:

    /opt/netlab/bin/python bench/cni_add.py --pods 100 [--jobs 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netlab.runtime import cni_chain as C   # noqa: E402


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def bench(mode: str, pods: int, jobs: int, cni_bin: str, data: str) -> tuple[float, float]:
    prefix = f"tcnib-{uuid.uuid4().hex[:6]}"
    node = f"{prefix}-node"
    names = [f"{prefix}-p{i}" for i in range(pods)]
    made = []
    try:
        for ns in [node] + names:
            sh("ip", "netns", "add", ns)
            made.append(ns)
        cl = C.node_conflist(mode, data, "node", "10.244.0.0/16", "10.244.0.1")
        path = [C.REFERENCE_DIR, cni_bin]
        results = {}

        def add(i):
            results[i] = C.add(cl, f"c{i}", f"/run/netns/{names[i]}", "eth0", node, path).result

        def delete(i):
            C.delete(cl, f"c{i}", f"/run/netns/{names[i]}", "eth0", node, results[i], path)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(add, range(pods)))
        t1 = time.perf_counter()
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(delete, range(pods)))
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        cni_bin = os.path.join(tmp, "bin")
        os.mkdir(cni_bin)
        wrapper = os.path.join(cni_bin, "netlab-cni")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nPYTHONPATH={root} exec {sys.executable} -m netlab.runtime.cni_plugin\n")
        os.chmod(wrapper, 0o755)
        print(f"{args.pods} pods on one node, {args.jobs} at a time")
        for mode in ("netlab", "reference"):
            add, delete = bench(mode, args.pods, args.jobs, cni_bin, os.path.join(tmp, mode))
            print(f"  {mode:9}  ADD {add:6.2f} s ({1000 * add / args.pods:5.0f} ms/pod)   "
                  f"DEL {delete:6.2f} s ({1000 * delete / args.pods:5.0f} ms/pod)")


if __name__ == "__main__":
    main()
