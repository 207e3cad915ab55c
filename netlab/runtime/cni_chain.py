"""Run a CNI conflist's plugin chain as kubelet's runtime (libcni) does, and build netlab's conflists.

ADD calls each plugin of the list in order, each given the result of the one before as
prevResult; DEL calls them in reverse, CHECK in order, both with the cached ADD result as
prevResult; GC and STATUS (spec 1.1.0 lists only) call each in order. A plugin is the executable
named by its "type", found in CNI_PATH, and it runs inside the node's network namespace
(`ip netns exec <node-ns> <plugin>`), so whatever it makes on the "host" side (bridge, veth,
iptables rules of ipMasq and portmap) stays in that namespace. Every request (its environment
and stdin JSON) and response is kept as a `Call`, so a CLI can print what a learner would type.

The caller keeps the ADD result (libcni caches it in /var/lib/cni; netlab keeps it in the lab's
state: see save_result) and passes it back to CHECK and DEL.

The conflist builders are pure: `netlab_conflist` (netlab-cni + portmap) and
`reference_conflist`, shaped like flannel's 10-flannel.conflist after flannel has written its
delegate: the reference `bridge` plugin with host-local IPAM, then portmap and loopback.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

from ..core.errors import EXIT_FAILED, NetlabError
from ..features.cni import (KNOWN_VERSIONS, _vkey, conflist_path, kubelet_cni_args,  # noqa: F401
                            list_version, netlab_conflist, node_conflist, node_dir,
                            plugin_config, plugin_env, reference_conflist)

REFERENCE_DIR = "/usr/lib/cni"
# What a plugin may need on PATH: go-iptables (bridge's ipMasq, portmap) runs `iptables`.
PLUGIN_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS")


@dataclass
class Call:
    """One plugin invocation: the request and the response."""
    plugin: str
    argv: list[str]
    env: dict[str, str]
    stdin: dict
    rc: int = 0
    stdout: str = ""
    stderr: str = ""

    def response(self) -> Optional[dict]:
        try:
            data = json.loads(self.stdout) if self.stdout.strip() else None
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def to_dict(self) -> dict:
        return {"plugin": self.plugin, "argv": self.argv, "env": self.env, "stdin": self.stdin,
                "rc": self.rc, "response": self.response(), "stderr": self.stderr}


@dataclass
class ChainResult:
    command: str
    result: Optional[dict]            # ADD: the last plugin's result; else None
    calls: list[Call] = field(default_factory=list)


class ChainError(NetlabError):
    """A plugin of the chain failed: `call` is its Call, `error` its error JSON (if it gave one)."""

    def __init__(self, call: Call, calls: list[Call]):
        err = call.response() or {}
        self.call, self.calls, self.error = call, calls, err
        what = err.get("msg") or call.stderr.strip() or f"exit {call.rc}"
        details = f" ({err['details']})" if err.get("details") else ""
        code = f" [code {err['code']}]" if "code" in err else ""
        super().__init__(f"CNI {call.env.get('CNI_COMMAND')} failed in plugin {call.plugin}"
                         f"{code}: {what}{details}", EXIT_FAILED)


def render_call(call: Call) -> str:
    """One call as a shell command a learner can run as it is, then its answer."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in call.env.items())
    body = json.dumps(call.stdin, indent=2)
    lines = [f"{env} \\", f"  {shlex.join(call.argv)} <<'EOF'", body, "EOF",
             f"# exit {call.rc}"]
    if call.stdout.strip():
        lines.append(call.stdout.strip())
    if call.stderr.strip():
        lines.append("# stderr: " + call.stderr.strip().replace("\n", "\n# "))
    return "\n".join(lines)


# ---------------------------------------------------------------- running the chain

def default_cni_path() -> list[str]:
    """/usr/lib/cni (the reference plugins) and the directory holding netlab-cni."""
    found = shutil.which("netlab-cni")
    # The venv's bin (through setup.sh's /usr/local/bin link), not all of /usr/local/bin.
    here = os.path.dirname(os.path.realpath(found)) if found else os.path.dirname(sys.executable)
    return [REFERENCE_DIR, here]


def find_plugin(kind: str, cni_path: list[str]) -> str:
    if not kind or "/" in kind or kind in (".", ".."):
        raise NetlabError(f"CNI plugin type {kind!r} is not an executable name")
    for d in cni_path:
        path = os.path.join(d, kind)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise NetlabError(f"CNI plugin {kind!r} not found in CNI_PATH {':'.join(cni_path)}",
                      EXIT_FAILED)


def _invoke(plugin: dict, conf: dict, env: dict[str, str], node_ns: str, cni_path: list[str],
            timeout: float, allow_host: bool) -> Call:
    path = find_plugin(plugin.get("type", ""), cni_path)
    # `ip netns exec` is what a learner types; node_ns "" is a node that is the real host.
    argv = ["ip", "netns", "exec", node_ns, path] if node_ns else [path]
    call = Call(plugin=plugin["type"], argv=argv, env=env, stdin=conf)
    proc = subprocess.run(argv, input=json.dumps(conf).encode(), capture_output=True,
                          env={**env, "PATH": PLUGIN_PATH_ENV,
                               **({"NETLAB_CNI_ALLOW_HOST": "1"} if allow_host else {})},
                          timeout=timeout)
    call.rc, call.stdout = proc.returncode, proc.stdout.decode(errors="replace")
    call.stderr = proc.stderr.decode(errors="replace")
    return call


def run_chain(command: str, conflist: dict, container_id: str = "", netns: str = "",
              ifname: str = "eth0", node_ns: str = "", cni_path: Optional[list[str]] = None,
              prev_result: Optional[dict] = None, cni_args: str = "",
              capability_args: Optional[dict] = None,
              valid_attachments: Optional[list[dict]] = None,
              timeout: float = 60, allow_host: bool = False) -> ChainResult:
    """Run `command` through the conflist's plugins; raises ChainError at the first failure.

    prev_result: for CHECK and DEL, the result the ADD returned (DEL works without it).
    capability_args: values for the plugins' capabilities, e.g. {"portMappings": [{"hostPort":
    8080, "containerPort": 80, "protocol": "tcp"}], "ips": ["10.244.1.5/24"]}.
    valid_attachments: for GC, [{"containerID": ..., "ifname": ...}] to keep.
    node_ns "" runs the plugins in this process's own namespace: refused unless allow_host (a
    node that is a real host), since the reference plugins would change that namespace.
    """
    if not node_ns and not allow_host:
        raise NetlabError("CNI plugins run inside a node's namespace: node_ns is empty "
                          "(allow_host=True only for a node that is a real host)")
    if command not in COMMANDS:
        raise NetlabError(f"CNI command {command!r}: one of {', '.join(COMMANDS)}")
    cni_path = cni_path or default_cni_path()
    plugins = list(conflist.get("plugins", []))
    version = list_version(conflist)
    if command in ("GC", "STATUS") and _vkey(version) < (1, 1, 0):
        return ChainResult(command, None, [])          # libcni: not before spec 1.1.0
    if command == "CHECK" and conflist.get("disableCheck"):
        return ChainResult(command, None, [])
    if command == "DEL":
        plugins.reverse()
    env = plugin_env(command, container_id, netns, ifname, cni_path, cni_args)
    calls: list[Call] = []
    result = prev_result if command in ("CHECK", "DEL") else None
    for plugin in plugins:
        extra = None
        if command == "GC":
            extra = {"cni.dev/valid-attachments": valid_attachments or [],
                     "cni.dev/attachments": valid_attachments or []}   # libcni sends both names
        conf = plugin_config(conflist, plugin, result, capability_args, extra)
        call = _invoke(plugin, conf, env, node_ns, cni_path, timeout, allow_host)
        calls.append(call)
        if call.rc != 0:
            raise ChainError(call, calls)
        if command == "ADD":
            result = call.response()
            if result is None:
                raise ChainError(call, calls)
    return ChainResult(command, result if command == "ADD" else None, calls)


def add(conflist: dict, container_id: str, netns: str, ifname: str, node_ns: str,
        cni_path: Optional[list[str]] = None, cni_args: str = "",
        capability_args: Optional[dict] = None) -> ChainResult:
    """ADD through the chain; on failure, DEL through it (as kubelet does) and raise."""
    try:
        return run_chain("ADD", conflist, container_id, netns, ifname, node_ns, cni_path,
                         cni_args=cni_args, capability_args=capability_args)
    except ChainError as e:
        try:
            undo = run_chain("DEL", conflist, container_id, netns, ifname, node_ns, cni_path,
                             cni_args=cni_args, capability_args=capability_args)
            e.calls = e.calls + undo.calls
        except ChainError as again:
            e.calls = e.calls + again.calls
        raise e


def delete(conflist: dict, container_id: str, netns: str, ifname: str, node_ns: str,
           prev_result: Optional[dict] = None, cni_path: Optional[list[str]] = None,
           cni_args: str = "", capability_args: Optional[dict] = None) -> ChainResult:
    """DEL through the chain in reverse (safe twice, and when the pod's namespace is gone)."""
    return run_chain("DEL", conflist, container_id, netns, ifname, node_ns, cni_path,
                     prev_result=prev_result, cni_args=cni_args, capability_args=capability_args)


def check(conflist: dict, container_id: str, netns: str, ifname: str, node_ns: str,
          prev_result: dict, cni_path: Optional[list[str]] = None, cni_args: str = "",
          capability_args: Optional[dict] = None) -> ChainResult:
    """CHECK through the chain; raises ChainError naming the drift a plugin found."""
    return run_chain("CHECK", conflist, container_id, netns, ifname, node_ns, cni_path,
                     prev_result=prev_result, cni_args=cni_args, capability_args=capability_args)


# ---------------------------------------------------------------- reading a result (pure)

def result_address(result: dict, netns: str, ifname: str = "eth0") -> Optional[str]:
    """The pod's "a.b.c.d/nn" on its interface in `netns`, from an ADD result."""
    interfaces = result.get("interfaces", [])
    for ip in result.get("ips", []):
        i = ip.get("interface")
        if i is not None and 0 <= i < len(interfaces) and \
                interfaces[i].get("name") == ifname and interfaces[i].get("sandbox") == netns:
            return ip["address"]
    return None


def result_host_veth(result: dict, bridge: str = "cni0") -> Optional[str]:
    """The node-side veth named in an ADD result (no sandbox, not the bridge): netlab-cni's
    veth<8 hex>, or the reference bridge plugin's random veth name."""
    for itf in result.get("interfaces", []):
        if not itf.get("sandbox") and itf.get("name") != bridge:
            return itf.get("name")
    return None


# ---------------------------------------------------------------- reading the ipMasq pitfall (pure)

def masquerade_rules_for(iptables_save: str, ip: str) -> list[str]:
    """The nat rules (as `iptables-save -t nat` prints them in a node's namespace) that masquerade
    traffic from pod address `ip`: the bridge plugin's ipMasq jumps from POSTROUTING for
    `-s IP/32` into a chain of its own that ACCEPTs the pod subnet and MASQUERADEs the rest.
    Returns the jump and the chain's MASQUERADE rule, so a failed no-NAT check can name them."""
    lines = [l for l in iptables_save.splitlines() if l.startswith("-A ")]
    found = []
    for line in lines:
        words = line.split()
        if words[1] != "POSTROUTING" or "-s" not in words or "-j" not in words:
            continue
        if words[words.index("-s") + 1] != f"{ip}/32":
            continue
        target = words[words.index("-j") + 1]
        if target == "MASQUERADE":
            found.append(line)
            continue
        masq = [l for l in lines if l.split()[1] == target and l.split()[-1] == "MASQUERADE"]
        if masq:
            found += [line] + masq
    return found


# ---------------------------------------------------------------- files in the lab's state

def write_conflist(state_dir: str, conflist: dict, node: Optional[str] = None) -> str:
    """Write a conflist into the lab's state (one per node: net.d/<node>/10-<name>.conflist)."""
    path = conflist_path(state_dir, conflist["name"], node)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(conflist, f, indent=2)
        f.write("\n")
    return path


def result_path(state_dir: str, network: str, container_id: str, ifname: str) -> str:
    """<state>/cni/results/<network>-<cid>-<ifname>: the ADD result (libcni keeps it in
    /var/lib/cni/results; netlab in the lab's state), for CHECK and DEL."""
    return os.path.join(state_dir, "cni", "results", f"{network}-{container_id}-{ifname}")


def save_result(state_dir: str, network: str, container_id: str, ifname: str,
                result: dict) -> str:
    path = result_path(state_dir, network, container_id, ifname)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return path


def load_result(state_dir: str, network: str, container_id: str, ifname: str) -> Optional[dict]:
    try:
        with open(result_path(state_dir, network, container_id, ifname)) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def drop_result(state_dir: str, network: str, container_id: str, ifname: str) -> None:
    try:
        os.unlink(result_path(state_dir, network, container_id, ifname))
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- a lab's pods (lifecycle)

def add_op(state_dir: str, op) -> dict:
    """Apply a plan's CniAdd: ADD through the node's conflist with the model's address (the ips
    capability), keep the result in the lab's state for CHECK and DEL; a KernelError naming the
    plugin that refused otherwise (the chain was DEL'd again, as kubelet does)."""
    from ..core.errors import KernelError
    with open(op.conflist) as f:
        conflist = json.load(f)
    env = dict(op.calls[0][0]) if op.calls else {}
    caps = json.loads(op.calls[0][2]).get("runtimeConfig", {}) if op.calls else {}
    try:
        result = add(conflist, op.container_id, f"/run/netns/{op.ns}", op.ifname, op.node_ns,
                     cni_args=env.get("CNI_ARGS", ""), capability_args=caps).result
    except ChainError as e:
        raise KernelError(f"CNI ADD of pod {op.owner} failed: {e.message}") from None
    save_result(state_dir, conflist["name"], op.container_id, op.ifname, result)
    return result


def del_record(state_dir: str, record: tuple) -> None:
    """DEL of one pod recorded in the journal (node ns, pod ns, container id, ifname, conflist)."""
    node_ns, ns, cid, ifname, path = record
    try:
        with open(path) as f:
            conflist = json.load(f)
    except (OSError, ValueError):
        return      # never written: the ADD never ran
    prev = load_result(state_dir, conflist["name"], cid, ifname)
    try:
        delete(conflist, cid, f"/run/netns/{ns}", ifname, node_ns, prev)
    except (ChainError, OSError, subprocess.SubprocessError):
        pass        # the namespaces go next, and with them whatever the plugins made there
    drop_result(state_dir, conflist["name"], cid, ifname)
