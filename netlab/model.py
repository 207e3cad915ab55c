"""The scenario: parse and check a scenario YAML into an immutable Lab, allocating addresses.

Pure: no kernel, no files but the scenario itself. Every error is a ScenarioError naming the file,
the line and the fix, so bad input never reaches the kernel. Kernel names (namespaces, interfaces)
are derived here, checked against the kernel's limits (15 characters for an interface).
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ScenarioError

MAX_BYTES = 1 << 20  # a scenario larger than 1 MiB is refused before parsing
IFNAMSIZ = 15
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
RESERVED = {"underlay", "outside", "router"}
NETEXEC = "netexec"
DEFAULT_PORT = 8080

DEFAULT_SCENARIO = Path(__file__).parent / "scenarios" / "three-node.yaml"


# ---------------------------------------------------------------- YAML with line numbers


MAX_DEPTH = 50  # a scenario nests 5 levels; far deeper is a mistake or an attack on the parser


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, so a YAML bomb never expands, and deep nesting."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasError(event.start_mark.line + 1)
        if self.depth >= MAX_DEPTH:
            raise _DepthError(self.peek_event().start_mark.line + 1)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _DepthError(Exception):
    def __init__(self, line: int):
        self.line = line


class _AliasError(Exception):
    def __init__(self, line: int):
        self.line = line


Loc = tuple


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}


def _to_python(loader: _Loader, node, loc: Loc, lines: dict, path: str) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if node.tag not in _PLAIN_TAGS:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise ScenarioError(path, node.start_mark.line + 1, f"the YAML tag '{tag}' is not "
                                                            f"supported: write a plain value")
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ScenarioError(path, key_node.start_mark.line + 1,
                                    "a key must be a plain word: write `name: value`")
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise ScenarioError(path, key_node.start_mark.line + 1,
                                    f"field '{key}' is given twice: keep one")
            lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = _to_python(loader, value_node, loc + (key,), lines, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(loader, item, loc + (i,), lines, path) for i, item in enumerate(node.value)]
    return loader.construct_object(node)


def load_yaml(text: str, path: str) -> tuple[Any, dict]:
    """Parse YAML text into plain Python plus a map from location tuple to line number."""
    try:
        loader = _Loader(text)  # checks every character first
    except yaml.reader.ReaderError as e:
        _reader_error(e, text, path)
    try:
        root = loader.get_single_node()
        if root is None:
            raise ScenarioError(path, 1, "the scenario is empty: start from scenarios/three-node.yaml")
        lines: dict = {}
        return _to_python(loader, root, (), lines, path), lines
    except _DepthError as e:
        raise ScenarioError(path, e.line, f"the YAML is nested more than {MAX_DEPTH} levels deep: "
                                          f"flatten it") from None
    except yaml.reader.ReaderError as e:
        _reader_error(e, text, path)
    except _AliasError as e:
        raise ScenarioError(path, e.line, "YAML anchors and aliases (*name) are not supported: "
                                          "write the value out") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = (e.problem or e.context or "invalid YAML").strip()
        raise ScenarioError(path, line, f"YAML syntax error: {what}: check indentation, colons "
                                        f"and quotes") from None
    except yaml.YAMLError as e:
        raise ScenarioError(path, None, f"YAML error: {e}".replace("\n", " ")) from None
    except RecursionError:
        raise ScenarioError(path, None, "the YAML is nested too deeply: flatten it") from None
    finally:
        loader.dispose()


def _reader_error(e: yaml.reader.ReaderError, text: str, path: str):
    line = text[: e.position].count("\n") + 1
    raise ScenarioError(path, line, f"the character {chr(e.character)!r} is not allowed in YAML: "
                                    f"remove it") from None


# ---------------------------------------------------------------- the schema (user's language)


def _check_name(value: str) -> str:
    if not NAME_RE.match(value) or len(value) > 63:
        raise ValueError(f"'{value}' is not a valid name: use lowercase letters, digits and '-', "
                         f"starting and ending with a letter or digit, at most 63 characters")
    return value


def _check_ipv4(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"'{value}' is not an IPv4 address: write it like 192.168.1.11") from None
    return value


def _check_cidr(value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise ValueError(f"'{value}' is not an IPv4 subnet: write it like 10.244.1.0/24") from None
    if "/" not in value:
        raise ValueError(f"'{value}' has no prefix length: write it like {net.network_address}/24")
    if str(net) != value:
        raise ValueError(f"'{value}' has host bits set: did you mean {net}?")
    if net.prefixlen > 30:
        raise ValueError(f"'{value}' is too small: use a prefix of /30 or shorter")
    return value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContainerSpec(_Spec):
    name: str
    image: Optional[Literal["netexec"]] = None
    command: Optional[list[str]] = None
    port: Optional[int] = Field(default=None, ge=1, le=65535)

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @field_validator("command")
    @classmethod
    def _command(cls, v):
        if v is not None and (not v or any(not s for s in v)):
            raise ValueError("a command is a list of words, like [sleep, infinity]")
        return v


class PodSpec(_Spec):
    name: str
    node: str
    ip: Optional[str] = None
    containers: list[ContainerSpec] = []

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))
    _ip = field_validator("ip")(classmethod(lambda cls, v: v if v is None else _check_ipv4(v)))


class NodeSpec(_Spec):
    name: str
    ip: Optional[str] = None
    podCIDR: Optional[str] = None

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))
    _ip = field_validator("ip")(classmethod(lambda cls, v: v if v is None else _check_ipv4(v)))
    _cidr = field_validator("podCIDR")(classmethod(lambda cls, v: v if v is None else _check_cidr(v)))


class NetworkSpec(_Spec):
    underlay: str = "192.168.1.0/24"
    podCIDR: str = "10.244.0.0/16"
    backend: Literal["host-gw"] = "host-gw"

    _cidr = field_validator("underlay", "podCIDR")(classmethod(lambda cls, v: _check_cidr(v)))


class ScenarioSpec(_Spec):
    name: Optional[str] = None
    description: Optional[str] = None
    network: NetworkSpec = NetworkSpec()
    nodes: list[NodeSpec] = Field(min_length=1)
    pods: list[PodSpec] = []

    @field_validator("name")
    @classmethod
    def _lab_name(cls, v):
        return v if v is None else check_lab_name(v)


def check_lab_name(value: str) -> str:
    if not NAME_RE.match(value) or len(value) > 32:
        raise ValueError(f"'{value}' is not a valid lab name: use lowercase letters, digits and "
                         f"'-', at most 32 characters")
    return value


# ---------------------------------------------------------------- the lab (what gets built)


def ifname_for(name: str, prefix: str = "") -> str:
    """A kernel interface name for an object, within 15 characters, stable and readable."""
    full = prefix + name
    if len(full) <= IFNAMSIZ:
        return full
    digest = hashlib.sha1(name.encode()).hexdigest()[:4]
    keep = IFNAMSIZ - len(prefix) - 5
    return f"{prefix}{name[:keep]}-{digest}"


@dataclass(frozen=True)
class Container:
    name: str
    argv: tuple[str, ...]
    port: Optional[int]
    image: Optional[str]


@dataclass(frozen=True)
class Node:
    name: str
    ns: str
    ip: str
    prefixlen: int
    pod_cidr: str
    gateway: str          # cni0's address: the first host of the pod subnet
    uplink: str           # the node's port on the underlay bridge (in the underlay namespace)


@dataclass(frozen=True)
class Pod:
    name: str
    ns: str
    node: str
    ip: str
    host_veth: str        # the node's end of the pod's veth, enslaved to cni0
    containers: tuple[Container, ...]


@dataclass(frozen=True)
class Lab:
    name: str
    source: str
    text: str
    backend: str
    underlay: str
    nodes: tuple[Node, ...]
    pods: tuple[Pod, ...]
    underlay_ns: str = field(default="")

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def pod(self, name: str) -> Pod:
        return next(p for p in self.pods if p.name == name)

    def pods_on(self, node: str) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.node == node)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.underlay_ns,) + tuple(n.ns for n in self.nodes) + tuple(p.ns for p in self.pods)


def netexec_argv(pod: str, port: int) -> tuple[str, ...]:
    """The built-in server's arguments; the plan turns `netexec` into this Python's module."""
    return (NETEXEC, "--port", str(port), "--name", pod)


# ---------------------------------------------------------------- parse and check


class _Where:
    """Finds the line of a location in the scenario, and raises errors there."""

    def __init__(self, path: str, lines: dict):
        self.path, self.lines = path, lines

    def line(self, loc: Loc) -> Optional[int]:
        loc = tuple(loc)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc)

    def fail(self, loc: Loc, message: str):
        raise ScenarioError(self.path, self.line(loc), message)


def _describe(loc: Loc, data: Any) -> str:
    """pods[2].containers[0] -> "pod 'web', container 'shell'" where names are known."""
    parts, cur = [], data
    for i, key in enumerate(loc):
        if isinstance(key, int) and isinstance(cur, list) and key < len(cur):
            item = cur[key]
            kind = {"nodes": "node", "pods": "pod", "containers": "container"}.get(loc[i - 1], "item")
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(f"{kind} '{name}'" if isinstance(name, str) else f"{kind} #{key + 1}")
            cur = item
        else:
            cur = cur.get(key) if isinstance(cur, dict) else None
    return ", ".join(parts)


def _fields_of(loc: Loc) -> list[str]:
    models = {"nodes": NodeSpec, "pods": PodSpec, "containers": ContainerSpec, "network": NetworkSpec}
    for key in reversed(loc[:-1]):
        if isinstance(key, str):
            return list(models.get(key, ScenarioSpec).model_fields)
    return list(ScenarioSpec.model_fields)


def _pydantic_error(err: dict, data: Any, where: _Where):
    loc = tuple(err["loc"])
    owner = _describe(loc, data)
    prefix = f"{owner}: " if owner else ""
    key = loc[-1] if loc else ""
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _fields_of(loc)
        hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
        fix = f"did you mean '{hint[0]}'?" if hint else f"known fields: {', '.join(known)}"
        where.fail(loc, f"{prefix}unknown field '{key}': {fix}")
    if kind == "missing":
        where.fail(loc[:-1], f"{prefix}field '{key}' is required: add `{key}: ...`")
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        msg = f"'{err['input']}' is not allowed here: {msg.lower()}"
    elif kind in ("int_parsing", "int_type", "string_type", "list_type", "bool_type", "model_type",
                  "dict_type", "int_from_float"):
        msg = f"{msg.lower()}, got {type(err['input']).__name__} {err['input']!r}"
    elif kind == "too_short" and key == "nodes":
        msg = "a lab needs at least one node: add one under `nodes:`"
    where.fail(loc, f"{prefix}{key}: {msg}" if isinstance(key, str) and key else f"{prefix}{msg}")


def read_scenario(path: Union[str, Path, None]) -> tuple[str, str]:
    """Read a scenario file as text; the default scenario when path is None."""
    p = Path(path) if path is not None else DEFAULT_SCENARIO
    shown = str(path) if path is not None else "scenarios/three-node.yaml"
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError(shown, None, "no such file: give the path of a scenario YAML, "
                                         "e.g. scenarios/three-node.yaml") from None
    except IsADirectoryError:
        raise ScenarioError(shown, None, "is a directory: give the path of a scenario YAML") from None
    except OSError as e:
        raise ScenarioError(shown, None, f"cannot read: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        line = raw[:MAX_BYTES].count(b"\n") + 1
        raise ScenarioError(shown, line, "the file is larger than 1 MiB (reached on this line): a "
                                         "scenario is a short description, generate a smaller one")
    try:
        return raw.decode("utf-8"), shown
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ScenarioError(shown, line, f"byte 0x{raw[e.start]:02x} is not UTF-8: save the "
                                         f"file as UTF-8") from None


def load(path: Union[str, Path, None] = None, name: Optional[str] = None) -> Lab:
    """Read, parse and check a scenario file into a Lab (the default scenario when path is None)."""
    text, shown = read_scenario(path)
    return parse(text, shown, name)


def parse(text: str, path: str = "<scenario>", name: Optional[str] = None) -> Lab:
    data, lines = load_yaml(text, path)
    where = _Where(path, lines)
    if not isinstance(data, dict):
        where.fail((), "a scenario is a mapping with at least `nodes:`: start from "
                       "scenarios/three-node.yaml")
    try:
        spec = ScenarioSpec.model_validate(data)
    except ValidationError as e:
        _pydantic_error(e.errors()[0], data, where)
    if name is not None:
        try:
            check_lab_name(name)
        except ValueError as e:
            raise ScenarioError(path, None, f"--name: {e}") from None
    lab_name = name or spec.name or _name_from_path(path, where)
    return _build(spec, lab_name, path, text, where)


def _name_from_path(path: str, where: _Where) -> str:
    stem = Path(path).stem.lower()
    try:
        return check_lab_name(stem)
    except ValueError:
        where.fail((), f"the lab has no valid name: add `name: my-lab` at the top")


def _build(spec: ScenarioSpec, lab: str, path: str, text: str, where: _Where) -> Lab:
    underlay = ipaddress.IPv4Network(spec.network.underlay)
    cluster = ipaddress.IPv4Network(spec.network.podCIDR)
    if underlay.overlaps(cluster):
        where.fail(("network", "podCIDR"), f"podCIDR {cluster} overlaps the underlay {underlay}: "
                                           f"use separate ranges")

    seen: dict[str, Loc] = {}

    def claim(obj: str, loc: Loc):
        if obj in RESERVED:
            where.fail(loc, f"the name '{obj}' is reserved for netlab's own namespaces: "
                            f"choose another")
        if obj in seen:
            where.fail(loc, f"the name '{obj}' is used twice (line {where.line(seen[obj])}): "
                            f"nodes and pods need distinct names")
        seen[obj] = loc

    nodes: list[Node] = []
    used_ips: dict[str, Loc] = {}
    subnets: list[tuple[ipaddress.IPv4Network, Loc, str]] = []
    uplinks: set[str] = set()
    hosts = list(underlay.hosts())
    for i, n in enumerate(spec.nodes):
        loc = ("nodes", i)
        claim(n.name, loc + ("name",))
        if n.ip is None:
            if 10 + i >= len(hosts):
                where.fail(loc, f"node '{n.name}' has no ip and the underlay {underlay} has no room "
                                f"left: give `ip:` or a larger underlay")
            ip = hosts[10 + i]
        else:
            ip = ipaddress.IPv4Address(n.ip)
            if ip not in hosts:
                where.fail(loc + ("ip",), f"node '{n.name}': ip {ip} is not a host address of the "
                                          f"underlay {underlay}: pick one inside it")
        if str(ip) in used_ips:
            where.fail(loc + ("ip",), f"node '{n.name}': ip {ip} is already used on line "
                                      f"{where.line(used_ips[str(ip)])}: give each node its own")
        used_ips[str(ip)] = loc + ("ip",)
        if n.podCIDR is None:
            try:
                subnet = list(cluster.subnets(new_prefix=24))[i + 1] if cluster.prefixlen <= 24 else None
            except IndexError:
                subnet = None
            if subnet is None:
                where.fail(loc, f"node '{n.name}' has no podCIDR and network.podCIDR {cluster} has no "
                                f"/24 left for it: give `podCIDR:`")
        else:
            subnet = ipaddress.IPv4Network(n.podCIDR)
        sloc = loc + ("podCIDR",)
        if subnet.overlaps(underlay):
            where.fail(sloc, f"node '{n.name}': podCIDR {subnet} overlaps the underlay {underlay}: "
                             f"use a separate range such as 10.244.{i + 1}.0/24")
        for other, oloc, oname in subnets:
            if subnet.overlaps(other):
                where.fail(sloc, f"node '{n.name}': podCIDR {subnet} overlaps node '{oname}''s "
                                 f"{other} (line {where.line(oloc)}): give each node its own subnet")
        subnets.append((subnet, sloc, n.name))
        uplink = ifname_for(n.name)
        if uplink in uplinks:
            where.fail(loc + ("name",), f"node '{n.name}' would get the same interface name "
                                        f"'{uplink}' as another node: shorten the name")
        uplinks.add(uplink)
        nodes.append(Node(name=n.name, ns=f"{lab}-{n.name}", ip=str(ip),
                          prefixlen=underlay.prefixlen, pod_cidr=str(subnet),
                          gateway=str(next(subnet.hosts())), uplink=uplink))

    by_name = {n.name: n for n in nodes}
    taken: dict[str, dict[str, Loc]] = {n.name: {} for n in nodes}
    veths: dict[str, set[str]] = {n.name: set() for n in nodes}
    for i, p in enumerate(spec.pods):
        loc = ("pods", i)
        claim(p.name, loc + ("name",))
        if p.node not in by_name:
            hint = difflib.get_close_matches(p.node, list(by_name), n=1)
            fix = f"did you mean '{hint[0]}'?" if hint else f"use one of {', '.join(by_name)}"
            where.fail(loc + ("node",), f"pod '{p.name}' is on unknown node '{p.node}': {fix}")
        node = by_name[p.node]
        if p.ip is not None:
            subnet = ipaddress.IPv4Network(node.pod_cidr)
            ip = ipaddress.IPv4Address(p.ip)
            if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
                where.fail(loc + ("ip",), f"pod '{p.name}': ip {ip} is outside node '{node.name}''s "
                                          f"podCIDR {subnet}: pick a host address inside it")
            if p.ip == node.gateway:
                where.fail(loc + ("ip",), f"pod '{p.name}': ip {ip} is cni0's own address on "
                                          f"'{node.name}': pick another")
            if p.ip in taken[node.name]:
                where.fail(loc + ("ip",), f"pod '{p.name}': ip {ip} is already used on line "
                                          f"{where.line(taken[node.name][p.ip])}: give each pod its own")
            taken[node.name][p.ip] = loc + ("ip",)
        veth = ifname_for(p.name, "veth-")
        if veth in veths[node.name]:
            where.fail(loc + ("name",), f"pod '{p.name}' would get the same interface name "
                                        f"'{veth}' as another pod on '{node.name}': rename it")
        veths[node.name].add(veth)
        _check_containers(p, loc, where)

    pods: list[Pod] = []
    free = {n.name: (str(h) for h in list(ipaddress.IPv4Network(n.pod_cidr).hosts())[1:]
                     if str(h) not in taken[n.name]) for n in nodes}
    for i, p in enumerate(spec.pods):
        ip = p.ip or next(free[p.node], None)
        if ip is None:
            node = by_name[p.node]
            where.fail(("pods", i, "node"), f"node '{node.name}''s podCIDR {node.pod_cidr} has no "
                                            f"address left for pod '{p.name}': use a larger podCIDR")
        containers = tuple(_container(p.name, c) for c in p.containers)
        pods.append(Pod(name=p.name, ns=f"{lab}-{p.name}", node=p.node, ip=ip,
                        host_veth=ifname_for(p.name, "veth-"), containers=containers))

    return Lab(name=lab, source=path, text=text, backend=spec.network.backend,
               underlay=str(underlay), nodes=tuple(nodes), pods=tuple(pods),
               underlay_ns=f"{lab}-underlay")


def _check_containers(p: PodSpec, loc: Loc, where: _Where):
    names: set[str] = set()
    ports: dict[int, str] = {}
    for j, c in enumerate(p.containers):
        cloc = loc + ("containers", j)
        if c.name in names:
            where.fail(cloc + ("name",), f"pod '{p.name}': container name '{c.name}' is used twice: "
                                         f"rename one")
        names.add(c.name)
        if (c.image is None) == (c.command is None):
            where.fail(cloc, f"pod '{p.name}', container '{c.name}': give either `image: netexec` "
                             f"(netlab's HTTP server) or `command: [...]`, not both or neither")
        if c.image is not None or c.port is not None:
            port = c.port or DEFAULT_PORT
            if port in ports:
                where.fail(cloc + ("port",), f"pod '{p.name}': port {port} is used by container "
                                             f"'{ports[port]}' too; containers of a pod share one "
                                             f"network namespace: use another port")
            ports[port] = c.name


def _container(pod: str, c: ContainerSpec) -> Container:
    if c.image == NETEXEC:
        port = c.port or DEFAULT_PORT
        return Container(name=c.name, argv=netexec_argv(pod, port), port=port, image=NETEXEC)
    return Container(name=c.name, argv=tuple(c.command or ()), port=c.port, image=None)
