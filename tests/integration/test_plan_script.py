"""`netlab plan` prints a script that builds the same kernel state as `netlab up`."""

from __future__ import annotations

import json
import subprocess

from conftest import leftovers, netlab, requires_root, unique_name

pytestmark = requires_root


def ip_json(ns: str, *args: str):
    out = subprocess.run(["ip", "-j", "-d", "-n", ns, *args], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out or "[]")


def kernel_state(lab: str, namespaces: list[str]) -> dict:
    """Links, addresses, routes and forwarding of every namespace, with the lab name taken out."""
    state = {}
    for ns in namespaces:
        links = ip_json(ns, "link", "show")
        names = {link["ifindex"]: link["ifname"] for link in links}
        state[ns.replace(lab, "LAB", 1)] = {
            "links": sorted(
                (link["ifname"], link.get("linkinfo", {}).get("info_kind", ""),
                 link.get("master", ""), "UP" in link["flags"], link["mtu"],
                 link.get("ifalias", "").replace(lab, "LAB"))
                for link in links),
            "addrs": sorted((a["ifname"], i["local"], i["prefixlen"])
                            for a in ip_json(ns, "-4", "addr", "show") for i in a["addr_info"]),
            "routes": sorted((r["dst"], r.get("gateway", ""), r.get("dev", ""),
                              r.get("protocol", ""), r.get("scope", ""))
                             for table in ("main", "local")
                             for r in ip_json(ns, "-4", "route", "show", "table", table)),
            "forwarding": subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n",
                                          "net.ipv4.ip_forward"], capture_output=True,
                                         text=True).stdout.strip(),
        }
        assert names  # every namespace has at least lo
    return state


def test_plan_script_builds_what_up_builds(tmp_path, unrecorded_lab):
    by_up, by_script = unique_name("plan-up"), unique_name("plan-sh")
    try:
        netlab("up", "--name", by_up)
        script = tmp_path / "lab.sh"
        script.write_text(netlab("plan", "--name", by_script).stdout)
        run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        lab_ns = [ln.split()[-1] for ln in script.read_text().splitlines()
                  if ln.startswith("ip netns add ")]
        up_state = kernel_state(by_up, [ns.replace(by_script, by_up, 1) for ns in lab_ns])
        script_state = kernel_state(by_script, lab_ns)
        assert up_state == script_state
        assert len(up_state) == 10
    finally:
        # A lab made by the script carries netlab's marks, so `netlab down` removes it too.
        netlab("down", by_up, check=False)
        netlab("down", by_script, check=False)
    assert leftovers(by_up) == [] and leftovers(by_script) == []


def services_state(lab: str, namespaces: list[str]) -> dict:
    """What the Services add: kube-proxy's table, bridge netfilter and hairpin, per namespace."""
    state = {}
    for ns in namespaces:
        nft = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                             capture_output=True, text=True).stdout
        bridge = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n",
                                 "net.bridge.bridge-nf-call-iptables"], capture_output=True,
                                text=True).stdout.strip()
        hairpin = sorted(link["ifname"] for link in ip_json(ns, "link", "show")
                         if link.get("linkinfo", {}).get("info_slave_data", {}).get("hairpin"))
        state[ns.replace(lab, "LAB", 1)] = (nft, bridge, hairpin)
    return state


def test_plan_script_builds_the_services_lab_as_up_does(tmp_path, unrecorded_lab):
    scenario = "scenarios/services.yaml"
    by_up, by_script = unique_name("svc-pup"), unique_name("svc-psh")
    try:
        netlab("up", scenario, "--name", by_up)
        script = tmp_path / "lab.sh"
        script.write_text(netlab("plan", scenario, "--name", by_script).stdout)
        run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        lab_ns = [ln.split()[-1] for ln in script.read_text().splitlines()
                  if ln.startswith("ip netns add ")]
        up_ns = [ns.replace(by_script, by_up, 1) for ns in lab_ns]
        assert kernel_state(by_up, up_ns) == kernel_state(by_script, lab_ns)
        up_svc, script_svc = services_state(by_up, up_ns), services_state(by_script, lab_ns)
        assert up_svc == script_svc
        node = up_svc["LAB-node1"]
        assert "table ip kube-proxy" in node[0] and node[1] == "1" and node[2]
    finally:
        netlab("down", by_up, check=False)
        netlab("down", by_script, check=False)
    assert leftovers(by_up) == [] and leftovers(by_script) == []
