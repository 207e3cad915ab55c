"""The kernel's neighbour table is shared by every namespace: a big lab gets permanent entries for
its own addresses, and when the table is full anyway verify says so.

The overflow test fills the table on purpose, in a namespace of its own, with dynamic entries kept
fresh (the kernel's forced gc never frees an entry updated in the last 5 s), for a few seconds
only: the table is shared with everyone on this machine. A small lab (whose own estimate stays
under the threshold, so it keeps ARP) then cannot make the ARP entries its packets need, and
verify must say that, with the sysctl; the same lab with `staticNeighbours: always` passes.
"""

from __future__ import annotations

import subprocess
import threading
import uuid

import pytest

from bench.gen import scenario
from conftest import leftovers, netlab, requires_root, unique_name, verify_json
from netlab import model
from netlab.features.neighbours import host_gc_thresh3, table_fulls

pytestmark = requires_root


def _scenario(tmp_path, name, nodes, pods, static=None):
    text = scenario(nodes, pods, netexec=True, name=name)
    if static:
        text = text.replace("  backend: host-gw", f"  backend: host-gw\n  staticNeighbours: {static}")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def labs():
    made = []
    yield made
    for name in made:
        netlab("down", name, check=False)
        assert leftovers(name) == [], f"lab {name} left things behind"


def test_big_lab_gets_permanent_entries_and_says_so(tmp_path, labs):
    name = unique_name("scl-nb")
    labs.append(name)
    path = _scenario(tmp_path, name, 4, 20)       # 4 x (400 + 20) + 12: over half of 1024
    lab = model.load(path)
    assert lab.neighbours.static == (lab.neighbours.estimate > host_gc_thresh3() // 2)
    up = netlab("up", str(path))
    if lab.neighbours.static:
        assert "permanent ARP entries" in up.stdout and "staticNeighbours: never" in up.stdout
        shown = subprocess.run(["ip", "-n", f"{name}-p1-1", "neigh", "show", "nud", "permanent"],
                               capture_output=True, text=True, check=True).stdout
        assert len(shown.splitlines()) == 20       # 19 pods on its node and cni0
    code, data = verify_json(name)
    assert code == 0 and data["failed"] == 0, [r["reason"] for r in data["results"] if not r["ok"]]


class Filler:
    """Dynamic neighbour entries in a namespace of this test's own, refreshed every second."""

    def __init__(self, count: int):
        self.ns = f"scl-fill-{uuid.uuid4().hex[:6]}"
        self.count = count
        self.stop = threading.Event()
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        for cmd in (["link", "add", "name", "fill0", "type", "bridge"],
                    ["link", "set", "fill0", "up"], ["addr", "add", "10.250.0.1/16", "dev", "fill0"]):
            subprocess.run(["ip", "-n", self.ns, *cmd], check=True)
        self.batch = "".join(f"neigh replace 10.250.{1 + i // 250}.{1 + i % 250} lladdr "
                             f"0a:59:00:00:{i >> 8:02x}:{i & 255:02x} dev fill0 nud reachable\n"
                             for i in range(count))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            subprocess.run(["ip", "-n", self.ns, "-force", "-batch", "-"], input=self.batch,
                           text=True, capture_output=True, timeout=20)
            self.stop.wait(1.0)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)
        subprocess.run(["ip", "netns", "del", self.ns], check=True)
        assert self.ns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                             text=True).stdout


def test_full_neighbour_table_is_the_reason_verify_gives(tmp_path, labs):
    if table_fulls() is None:
        pytest.skip("this kernel has no table_fulls in /proc/net/stat/arp_cache")
    arp = unique_name("scl-ov")
    static = unique_name("scl-os")
    labs += [arp, static]
    small = _scenario(tmp_path, arp, 2, 2)
    assert not model.load(small).neighbours.static      # its own estimate stays under the limit
    netlab("up", str(small))
    netlab("up", str(_scenario(tmp_path, static, 2, 2, static="always")))
    with Filler(host_gc_thresh3() + 64):
        before = table_fulls()
        code, data = verify_json(arp, "--only", "pod-pod-cross-node", "--only", "pod-to-node")
        code_static, data_static = verify_json(static, "--only", "pod-pod-cross-node")
        grew = table_fulls() - before
    assert grew > 0, "the filler did not fill the neighbour table"
    assert code == 1 and data["failed"] > 0
    reasons = {r["reason"] for r in data["results"] if not r["ok"]}
    assert all("neighbour (ARP) table was full" in r and "net.ipv4.neigh.default.gc_thresh3" in r
               for r in reasons), reasons
    assert data["table_full"] > 0
    # permanent entries need no room in the table: the same lab with them passes meanwhile
    assert code_static == 0 and data_static["failed"] == 0, data_static["results"]


def neighbours_of(ns: str) -> list:
    out = subprocess.run(["ip", "-j", "-n", ns, "neigh", "show", "nud", "permanent"],
                         capture_output=True, text=True, check=True).stdout
    import json
    return sorted((n["dst"], n["dev"], n["lladdr"]) for n in json.loads(out or "[]"))


def test_plan_script_makes_the_same_permanent_entries_as_up(tmp_path, labs, unrecorded_lab):
    by_up, by_script = unique_name("scl-nu"), unique_name("scl-ns")
    labs += [by_up, by_script]
    netlab("up", str(_scenario(tmp_path, by_up, 2, 3, static="always")))
    text = netlab("plan", str(_scenario(tmp_path, by_script, 2, 3, static="always"))).stdout
    script = tmp_path / "lab.sh"
    script.write_text(text)
    run = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for suffix in ("p1-1", "p2-3", "n1", "n2"):
        made = neighbours_of(f"{by_up}-{suffix}")
        assert made and made == neighbours_of(f"{by_script}-{suffix}")
    links = subprocess.run(["ip", "-n", f"{by_up}-p1-2", "link", "show", "eth0"],
                           capture_output=True, text=True, check=True).stdout
    assert "0a:58:0a:00:01:03" in links       # the MAC the other pods' entries name
