"""Not root, missing tools, missing kernel features: a message saying what to do, exit 2, and
nothing made. Runs the real CLI as an unprivileged user (nobody) where Python allows it, else in a
user namespace, where netlab's uid is the overflow uid 65534 (nobody) as well."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, leftovers, netlab, requires_root, unique_name
from netlab import model
from netlab.runtime import preflight
from netlab.core.errors import NetlabError

pytestmark = requires_root


def as_nobody(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "netlab", *args]
    setpriv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    if subprocess.run(setpriv + [sys.executable, "-c", "import netlab.cli"], cwd=ROOT,
                      capture_output=True).returncode == 0:
        prefix = setpriv
    else:  # this Python lives where nobody may not read (e.g. under /root)
        prefix = ["unshare", "--user"]
    return subprocess.run(prefix + cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_without_root_a_message_to_use_sudo(lab_name):
    netlab("up", "--name", lab_name)  # a real lab, so show and exec have something to refuse
    assert as_nobody("status").returncode == 0
    for args in (["up", "--name", unique_name("rl")], ["down", lab_name], ["show", lab_name],
                 ["exec", lab_name, "web", "--", "ip", "addr"], ["clean"]):
        r = as_nobody(*args)
        assert r.returncode == 2, (args, r)
        assert r.stderr.splitlines() == [
            f"netlab: error: netlab {args[0]} changes or reads network namespaces and needs root: "
            f"run it with sudo (sudo netlab {args[0]} ...)"], r.stderr
    assert len([ns for ns in os.listdir("/run/netns") if ns.startswith(lab_name + "-")]) == 10
    plan = as_nobody("plan")
    assert plan.returncode == 0 and "ip netns add three-node-underlay" in plan.stdout
    status = as_nobody("status")
    assert status.returncode == 0 and lab_name in status.stdout


def path_without(tmp_path, *missing: str) -> str:
    """A PATH of links to the tools netlab and the lab use, lacking `missing`."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("ping", "curl", "nft", "sleep", "ip", "sh"):
        if tool not in missing:
            (folder / tool).symlink_to(shutil.which(tool))
    return str(folder)


@pytest.mark.parametrize("missing, package", [("ping", "iputils-ping"), ("curl", "curl")])
def test_a_missing_tool_is_named_with_its_package(missing, package, tmp_path):
    name = unique_name("rl")
    r = netlab("up", "--name", name, check=False, env={"PATH": path_without(tmp_path, missing)})
    assert r.returncode == 2, r
    assert r.stderr.splitlines() == [
        f"netlab: error: {missing} not found on PATH: the lab needs it; install with "
        f"`sudo apt-get install {package}` (or run ./setup.sh)"]
    assert leftovers(name) == []


def test_a_container_command_that_is_not_installed(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text("nodes: [{name: node1}]\npods:\n  - name: web\n    node: node1\n"
                        "    containers: [{name: tool, command: [netlab-no-such-tool, x]}]\n")
    name = unique_name("rl")
    r = netlab("up", str(scenario), "--name", name, check=False)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "netlab: error: pod 'web', container 'tool': command 'netlab-no-such-tool' not found on "
        f"PATH: install it or fix the container's command in {scenario}"], r.stderr
    assert leftovers(name) == []


def test_the_kernel_features_are_probed_in_a_throwaway_namespace():
    before = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout
    preflight.check_kernel(["veth", "bridge"])  # this kernel has them: no error
    with pytest.raises(NetlabError) as missing:
        preflight.check_kernel(["veth", "bridge", "nosuchkind"])
    assert missing.value.code == 2
    assert str(missing.value) == ("this kernel cannot create nosuchkind (nosuchkind) links: load the "
                                  "module (`sudo modprobe nosuchkind`) or use a kernel built with it")
    assert subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout == before


def test_vxlan_is_asked_for_only_when_a_lab_uses_it():
    lab = model.load(None, "rl-kinds")
    assert preflight.kinds_for(lab) == ["veth", "bridge"]
    assert preflight.tools_for(lab) == ["ping", "curl"]
    assert preflight.tools_for(lab, ["nft"]) == ["ping", "curl", "nft"]
