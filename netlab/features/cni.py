"""CNI: pods wired through the CNI protocol as kubelet's runtime does, by netlab's own plugin
(`netlab-cni`) or by Debian's reference plugins (bridge + host-local + portmap + loopback from
/usr/lib/cni), instead of netlab's own netlink path (`network.cni: builtin`, the default).

For `netlab` and `reference` the plan writes one conflist per node into the lab's state
(`net.d/<node>/10-<name>.conflist`, shaped like flannel's 10-flannel.conflist) and, for every
pod, a CniAdd: each plugin of the list run inside the node's namespace (`ip netns exec`) with the
CNI_* environment and its config on stdin, the result of one the prevResult of the next. The pod
gets the model's address through the `ips` capability, so verify proves the same rules for all
three modes. `down` calls DEL through the chain before the namespaces go. The IPAM state and the
cached results stay in the lab's state directory: nothing in /var/lib/cni or /etc/cni.

The ipMasq pitfall: with `cni: reference` and `ipMasq: true` (as some guides configure the bridge
plugin), the bridge plugin masquerades pod traffic that leaves the pod subnet: cross-node pod
traffic arrives SNAT'd to the node's address, and verify's no-NAT checks fail naming the rule.

The conflist builders and the request helpers here are pure; runtime/cni_chain.py runs chains.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Literal, Optional

from ..core.errors import NetlabError
from ..core.feature import Feature, Needs, NotOnHost
from ..core.versions import version_key
from ..core.lab import Lab, Pod, state_dir, vtep_mac
from ..core.ops import CniAdd, LinkAddress, WriteFile
from ..core.schema import Build

KNOWN_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
REFERENCE_DIR = "/usr/lib/cni"
MODES = ("builtin", "netlab", "reference")
REFERENCE_PLUGINS = ("bridge", "host-local", "portmap", "loopback")


_vkey = version_key


# ---------------------------------------------------------------- requests (pure)

def list_version(conflist: dict) -> str:
    """The version the chain speaks: the highest known of cniVersions (1.1.0), else cniVersion."""
    versions = [v for v in conflist.get("cniVersions", []) if v in KNOWN_VERSIONS]
    return max(versions, key=_vkey) if versions else conflist.get("cniVersion", "0.1.0")


def plugin_config(conflist: dict, plugin: dict, prev_result: Optional[dict] = None,
                  capability_args: Optional[dict] = None, extra: Optional[dict] = None) -> dict:
    """The stdin JSON of one plugin, as libcni builds it: the plugin's own section plus the list's
    name and cniVersion, prevResult when there is one, and runtimeConfig holding each capability
    the plugin declares that the runtime has values for (portMappings, ips, ...)."""
    conf = dict(plugin)
    conf["name"] = conflist["name"]
    conf["cniVersion"] = list_version(conflist)
    runtime = {cap: (capability_args or {})[cap]
               for cap, on in plugin.get("capabilities", {}).items()
               if on and cap in (capability_args or {})}
    if runtime:
        conf["runtimeConfig"] = runtime
    if prev_result is not None:
        conf["prevResult"] = prev_result
    conf.update(extra or {})
    return conf


def plugin_env(command: str, container_id: str, netns: str, ifname: str, cni_path: list[str],
               cni_args: str = "") -> dict[str, str]:
    """The CNI_* environment of one call (GC and STATUS carry only the command and the path)."""
    env = {"CNI_COMMAND": command}
    if command not in ("GC", "STATUS"):
        env.update({"CNI_CONTAINERID": container_id, "CNI_NETNS": netns, "CNI_IFNAME": ifname})
        if cni_args:
            env["CNI_ARGS"] = cni_args
    env["CNI_PATH"] = ":".join(cni_path)
    return env


def kubelet_cni_args(pod_namespace: str, pod_name: str, container_id: str,
                     ip: Optional[str] = None) -> str:
    """CNI_ARGS as kubelet's runtime passes them (and host-local's IP= for a fixed address)."""
    args = ["IgnoreUnknown=1", f"K8S_POD_NAMESPACE={pod_namespace}", f"K8S_POD_NAME={pod_name}",
            f"K8S_POD_INFRA_CONTAINER_ID={container_id}"]
    if ip:
        args.append(f"IP={ip}")
    return ";".join(args)




# ---------------------------------------------------------------- conflists netlab writes (pure)

def netlab_conflist(subnet: str, gateway: str, data_dir: str, bridge: str = "cni0",
                    mtu: int = 1500, name: str = "netlab") -> dict:
    """netlab-cni (its own IPAM, state in data_dir) chained with portmap."""
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "netlab-cni", "bridge": bridge, "mtu": mtu,
         "capabilities": {"ips": True},
         "ipam": {"subnet": subnet, "gateway": gateway, "dataDir": data_dir}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]}


def reference_conflist(subnet: str, gateway: str, data_dir: str, range_start: Optional[str] = None,
                       bridge: str = "cni0", mtu: int = 1500, ip_masq: bool = False,
                       name: str = "cbr0") -> dict:
    """Debian's reference plugins as flannel's 10-flannel.conflist delegates to them: bridge
    (isGateway, isDefaultGateway, hairpinMode, ipMasq off unless asked: flannel masquerades
    itself), host-local IPAM with its files in data_dir, then portmap and loopback.
    Spec 1.0.0: the highest the Debian plugins (1.1.1) speak."""
    rng = {"subnet": subnet, "gateway": gateway}
    if range_start:
        rng["rangeStart"] = range_start
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "isDefaultGateway": True,
         "hairpinMode": True, "ipMasq": ip_masq, "mtu": mtu,
         "capabilities": {"ips": True},
         "ipam": {"type": "host-local", "ranges": [[rng]], "dataDir": data_dir}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "loopback"},
    ]}


def node_dir(state_dir: str, node: str) -> str:
    """<state>/cni/<node>: one node's CNI files (its IPAM state is its own: the network name is
    the same on every node, so the IPAM dataDir must not be)."""
    return os.path.join(state_dir, "cni", node)


def node_conflist(mode: str, state_dir: str, node: str, subnet: str, gateway: str,
                  mtu: int = 1500, ip_masq: bool = False, bridge: str = "cni0") -> dict:
    """The conflist of one node for `network.cni` mode "netlab" or "reference", its IPAM files in
    <state>/cni/<node>/ipam."""
    data_dir = os.path.join(node_dir(state_dir, node), "ipam")
    if mode == "netlab":
        if ip_masq:
            raise NetlabError("ipMasq is a setting of the reference bridge plugin (cni: reference)")
        return netlab_conflist(subnet, gateway, data_dir, bridge=bridge, mtu=mtu)
    if mode == "reference":
        return reference_conflist(subnet, gateway, data_dir, bridge=bridge, mtu=mtu, ip_masq=ip_masq)
    raise NetlabError(f"network.cni {mode!r}: one of builtin, netlab, reference")



def conflist_path(state_dir: str, name: str, node: Optional[str] = None) -> str:
    """<state>/net.d[/<node>]/10-<name>.conflist, as /etc/cni/net.d holds it on a node."""
    base = os.path.join(state_dir, "net.d", node) if node else os.path.join(state_dir, "net.d")
    return os.path.join(base, f"10-{name}.conflist")




def cni_path() -> list[str]:
    """Where the plugins are: Debian's reference plugins, and netlab-cni beside this Python."""
    return [REFERENCE_DIR, os.path.dirname(sys.executable)]


def plugin_file(kind: str) -> str:
    """The plugin's executable as the script runs it (a bare `bridge` would be iproute2's)."""
    return os.path.join(cni_path()[1] if kind == "netlab-cni" else REFERENCE_DIR, kind)


def container_id(pod: Pod) -> str:
    return pod.ns       # unique on the machine, and what a learner sees in `ip netns list`


def pod_conflist(lab: Lab, pod: Pod) -> dict:
    node = lab.node(pod.node)
    return node_conflist(lab.cni.mode, state_dir(lab.name), node.name, node.pod_cidr,
                         node.gateway, mtu=lab.mtu, ip_masq=lab.cni.ip_masq)


def pod_address(lab: Lab, pod: Pod) -> str:
    return f"{pod.ip}/{lab.node(pod.node).pod_cidr.split('/')[1]}"


def predicted_result(lab: Lab, pod: Pod, conflist: dict) -> dict:
    """The ADD result the model predicts (what the next plugin gets as prevResult in the script)."""
    gateway = lab.node(pod.node).gateway
    return {"cniVersion": list_version(conflist),
            "ips": [{"address": pod_address(lab, pod), "gateway": gateway}],
            "routes": [{"dst": "0.0.0.0/0", "gw": gateway}]}


def cni_add(lab: Lab, pod: Pod) -> CniAdd:
    conflist = pod_conflist(lab, pod)
    cid = container_id(pod)
    env = plugin_env("ADD", cid, f"/run/netns/{pod.ns}", "eth0", cni_path(),
                     kubelet_cni_args(getattr(pod, "namespace", "default"), pod.name, cid))
    caps = {"ips": [pod_address(lab, pod)]}
    calls, prev = [], None
    for plugin in conflist["plugins"]:
        stdin = json.dumps(plugin_config(conflist, plugin, prev, caps), indent=1)
        calls.append((tuple(env.items()), plugin_file(plugin["type"]), stdin))
        prev = predicted_result(lab, pod, conflist)
    node = lab.node(pod.node)
    return CniAdd(node.ns, pod.ns, cid, "eth0",
                  conflist_path(state_dir(lab.name), conflist["name"], node.name), pod.name,
                  tuple(calls), pod_address(lab, pod), node.gateway)


@dataclass(frozen=True)
class CniSetup:
    """The lab's part: which plugins wire its pods."""
    mode: str
    ip_masq: bool

    @property
    def plugins(self) -> bool:
        return self.mode != "builtin"


class Cni(Feature):
    name = "cni"
    schema = {"network.cni": (Literal["builtin", "netlab", "reference"], "builtin"),
              "network.ipMasq": (bool, False)}

    def build(self, spec: Any, b: Build) -> None:
        mode, masq = spec.network.cni, spec.network.ipMasq
        if masq and mode != "reference":
            b.where.fail(("network", "ipMasq"), "ipMasq is a setting of the reference bridge "
                                                "plugin: use `cni: reference`, or drop ipMasq")
        b.parts["cni"] = CniSetup(mode, masq)

    def ops(self, lab: Lab, phase: str) -> list:
        if phase != "links" or not lab.cni.plugins:
            return []
        ops: list = []
        for node in lab.nodes:
            pods = [p for p in lab.pods_on(node.name) if not p.host_network]
            if not pods:
                continue
            conflist = pod_conflist(lab, pods[0])
            ops.append(LinkAddress(node.ns, "cni0", vtep_mac(node.gateway)))
            ops.append(WriteFile(conflist_path(state_dir(lab.name), conflist["name"], node.name),
                                 json.dumps(conflist, indent=2) + "\n"))
            ops += [cni_add(lab, pod) for pod in pods]
        return ops

    def node_ops(self, lab: Lab, node: Any, underlay: str, phase: str) -> list:
        if lab.cni.plugins:
            raise NotOnHost(f"--node: lab {lab.name} wires its pods through CNI plugins "
                            f"(network.cni: {lab.cni.mode}), which node mode does not do yet: "
                            f"use cni: builtin")
        return []

    def needs(self, lab: Lab) -> Needs:
        if not lab.cni.plugins:
            return Needs()
        wanted = ["netlab-cni", "portmap"] if lab.cni.mode == "netlab" else list(REFERENCE_PLUGINS)

        def plugins_there() -> str:
            missing = [p for p in wanted if not any(os.access(os.path.join(d, p), os.X_OK)
                                                    for d in cni_path())]
            if not missing:
                return ""
            return (f"CNI plugins {', '.join(missing)} not found in {':'.join(cni_path())}: "
                    f"install with `sudo apt-get install containernetworking-plugins` (netlab-cni "
                    f"comes with netlab: run ./setup.sh)")
        return Needs(tools=["iptables"] * (lab.cni.mode == "reference"), checks=[plugins_there])

    def show(self, lab: Lab, status: Any) -> dict:
        if not lab.cni.plugins:
            return {"cni": {"mode": "builtin"}}
        lists = {}
        for node in lab.nodes:
            pods = [p for p in lab.pods_on(node.name) if not p.host_network]
            if pods:
                conflist = pod_conflist(lab, pods[0])
                lists[node.name] = {"path": conflist_path(state_dir(lab.name), conflist["name"],
                                                          node.name), "conflist": conflist}
        return {"cni": {"mode": lab.cni.mode, "ipMasq": lab.cni.ip_masq, "conflists": lists}}

    def render(self, data: dict) -> list[Any]:
        cni = data.get("cni", {})
        if cni.get("mode", "builtin") == "builtin":
            return []
        what = ("netlab-cni + portmap" if cni["mode"] == "netlab" else
                "the reference plugins: bridge + host-local + portmap + loopback")
        out = [f"\nCNI: pods wired by {what}" + (" (ipMasq on)" if cni.get("ipMasq") else "")]
        for node, entry in cni["conflists"].items():
            out.append(f"{node}: {entry['path']}")
        first = next(iter(cni["conflists"].values()), None)
        if first:
            out.append(json.dumps(first["conflist"], indent=2))
        return out
