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
DOCKER_CIDR = "172.17.0.0/16"   # docker0's default subnet, on every node unless it says otherwise
OUTSIDE_IP = "203.0.113.10"     # the outside world's web server: a documentation address (RFC 5737)
OUTSIDE_PORT = 80
UNDERLAY_MTU = 1500   # every underlay link is plain Ethernet
VXLAN_OVERHEAD = 50   # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8, as flannel subtracts
VXLAN_VNI = 1         # flannel's default VNI (its device is flannel.<VNI>)
VXLAN_PORT = 4789     # the IANA VXLAN port (the kernel's own default is 8472)
VXLAN_DEV = "flannel.1"
NODE_PORT = 8000  # every node runs netlab's server on this port (the classic `nc -l 8000`)

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
    if _c_parser_safe(text):
        try:
            return _load_yaml(yaml.CSafeLoader, text, path)
        except ScenarioError:
            pass  # the error is reported below, worded by the same parser as always
    return _load_yaml(_Loader, text, path)


def _c_parser_safe(text: str) -> bool:
    """Whether libyaml's parser (C, ~20x faster on a 1,000-pod scenario) may read this text: it
    cannot refuse aliases as _Loader does, so only text without `&` or `*`, and without flow
    brackets nested deeper than 32 (the C composer recurses without a limit)."""
    if not getattr(yaml, "__with_libyaml__", False) or "&" in text or "*" in text:
        return False
    depth = 0
    for c in re.sub(r"[^\[\]{}]", "", text):
        depth += 1 if c in "[{" else -1
        if depth > 32:
            return False
    return True


def _load_yaml(loader_class: type, text: str, path: str) -> tuple[Any, dict]:
    try:
        loader = loader_class(text)  # checks every character first
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
    hostNetwork: bool = False

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))
    _ip = field_validator("ip")(classmethod(lambda cls, v: v if v is None else _check_ipv4(v)))


class NodeSpec(_Spec):
    name: str
    ip: Optional[str] = None
    podCIDR: Optional[str] = None
    dockerCIDR: Optional[str] = None

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))
    _ip = field_validator("ip")(classmethod(lambda cls, v: v if v is None else _check_ipv4(v)))
    _cidr = field_validator("podCIDR", "dockerCIDR")(
        classmethod(lambda cls, v: v if v is None else _check_cidr(v)))


class NetworkSpec(_Spec):
    underlay: Union[str, list[str]] = "192.168.1.0/24"
    podCIDR: str = "10.244.0.0/16"
    backend: Literal["host-gw", "vxlan"] = "host-gw"

    _cidr = field_validator("podCIDR")(classmethod(lambda cls, v: _check_cidr(v)))
    _underlay = field_validator("underlay", mode="before")(
        classmethod(lambda cls, v: _check_underlay(v)))


def _check_underlay(value: Any) -> Any:
    """One subnet (a flat switch) or a list of segments joined by the lab's router."""
    if isinstance(value, str):
        return _check_cidr(value)
    if isinstance(value, list) and value and all(isinstance(s, str) for s in value):
        for s in value:
            _check_cidr(s)
        return value
    raise ValueError("give one subnet like 192.168.1.0/24, or a list of segments joined by a "
                     "router like [192.168.1.0/24, 192.168.2.0/24]")


class DockerSpec(ContainerSpec):
    """A container run straight on a node, like `docker run --network=MODE -p H:C`."""
    node: str
    network: Literal["none", "bridge", "host"] = "bridge"
    ports: list[Union[str, int]] = []


class OutsideSpec(_Spec):
    """The outside world: a web server on a documentation address, behind a router on the underlay."""
    ip: str = OUTSIDE_IP
    port: int = Field(default=OUTSIDE_PORT, ge=1, le=65535)

    _ip = field_validator("ip")(classmethod(lambda cls, v: _check_ipv4(v)))


class CheckSpec(_Spec):
    """A check written in the scenario: from a pod or node to a pod, node or address."""
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: Optional[str] = None
    from_: str = Field(alias="from")
    to: str
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    expect: Literal["reachable", "unreachable"] = "reachable"
    nat: Optional[bool] = None


class ScenarioSpec(_Spec):
    name: Optional[str] = None
    description: Optional[str] = None
    network: NetworkSpec = NetworkSpec()
    nodes: list[NodeSpec] = Field(min_length=1)
    pods: list[PodSpec] = []
    containers: list[DockerSpec] = []
    outside: Optional[OutsideSpec] = None
    checks: list[CheckSpec] = []

    @field_validator("outside", mode="before")
    @classmethod
    def _outside(cls, v):
        # `outside: true` asks for the default outside world; `outside: false` for none.
        if v is True:
            return {}
        if v is False:
            return None
        return v

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
    docker_cidr: str = DOCKER_CIDR
    docker_gw: str = "172.17.0.1"   # docker0's address: the first host of docker_cidr
    segment: int = 0      # index of the node's underlay segment in Lab.segments
    vtep: str = ""        # vxlan: flannel.1's address, the pod subnet's network address (/32)
    vtep_mac: str = ""    # vxlan: flannel.1's MAC, derived from the node IP (0a:58:<ip>)


@dataclass(frozen=True)
class Pod:
    name: str
    ns: str
    node: str
    ip: str
    host_veth: str        # the node's end of the pod's veth, enslaved to cni0
    containers: tuple[Container, ...]
    host_network: bool = False   # hostNetwork: true: no namespace of its own, the node's IP
    mtu: int = UNDERLAY_MTU   # of eth0 (and its veth peer): less than the underlay on vxlan


@dataclass(frozen=True)
class PortMap:
    """A published port, `-p host_port:container_port/proto`."""
    host_port: int
    container_port: int
    proto: str            # tcp or udp

    def __str__(self) -> str:
        return f"{self.host_port}:{self.container_port}/{self.proto}"


@dataclass(frozen=True)
class DockerContainer:
    """A container run straight on a node in Docker's none, bridge or host network mode."""
    name: str
    node: str
    mode: str             # none, bridge or host
    ns: str               # its own namespace (none, bridge) or the node's (host)
    ip: Optional[str]     # bridge: from the node's docker subnet; host: the node's IP; none: None
    host_veth: Optional[str]   # bridge: the node's end of its veth, enslaved to docker0
    ports: tuple[PortMap, ...]  # as written in the scenario
    process: Container

    @property
    def published(self) -> tuple[PortMap, ...]:
        """The ports that really get published: Docker ignores -p in none and host mode."""
        return self.ports if self.mode == "bridge" else ()


@dataclass(frozen=True)
class Outside:
    """The outside world: a router on the underlay with a web server behind it."""
    ns: str
    ip: str               # the web server's address (on the router's lo)
    port: int
    router: str           # the router's address on the underlay: the nodes' default gateway
    prefixlen: int
    uplink: str = "outside"   # its port on the underlay bridge


@dataclass(frozen=True)
class ScenarioCheck:
    """A check from the scenario's `checks:`; src is a pod or node, dst a pod, node or address."""
    line: Optional[int]
    name: str
    src: str
    dst: str
    dst_ip: str
    port: Optional[int]       # None: ping; else TCP/HTTP to this port
    expect: str               # "reachable" or "unreachable"
    nat: Optional[bool]       # False: the server must see the client's own address; True: not


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
    containers: tuple[DockerContainer, ...] = ()
    outside: Optional[Outside] = None
    mtu: int = UNDERLAY_MTU          # the pods' MTU: 1500 on host-gw, 1450 on vxlan
    segments: tuple[str, ...] = ()   # the underlay's subnets; more than one: joined by a router
    router_ns: str = ""              # "<lab>-router" when the underlay has several segments
    router_ips: tuple[str, ...] = () # the router's address in each segment (its first host)
    checks: tuple[ScenarioCheck, ...] = ()

    def container(self, name: str) -> DockerContainer:
        return next(c for c in self.containers if c.name == name)

    def containers_on(self, node: str) -> tuple[DockerContainer, ...]:
        return tuple(c for c in self.containers if c.node == node)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def pod(self, name: str) -> Pod:
        return next(p for p in self.pods if p.name == name)

    def pods_on(self, node: str) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.node == node)

    @property
    def namespaces(self) -> tuple[str, ...]:
        router = (self.router_ns,) if self.router_ns else ()
        return ((self.underlay_ns,) + router + tuple(n.ns for n in self.nodes)
                + tuple(p.ns for p in self.pods if not p.host_network)
                + tuple(c.ns for c in self.containers if c.mode != "host")
                + ((self.outside.ns,) if self.outside else ()))


def largest_ping_payload(lab: Lab) -> int:
    """The largest `ping -M do -s N` payload that fits every pod's MTU (IPv4 20 + ICMP 8 bytes)."""
    return min((p.mtu for p in lab.pods), default=lab.mtu) - 28


def bridge_name(segment: int) -> str:
    """The underlay bridge of a segment, in the underlay namespace."""
    return f"br{segment}"


def vtep_mac(node_ip: str) -> str:
    """flannel.1's MAC for a node: locally administered 0a:58 then the node IP, so it is stable
    and the plan stays pure (flannel lets the kernel pick one and publishes it instead)."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(node_ip).packed)


def netexec_argv(pod: str, port: int) -> tuple[str, ...]:
    """The built-in server's arguments; the plan turns `netexec` into this Python's module."""
    return (NETEXEC, "--port", str(port), "--name", pod)


# ---------------------------------------------------------------- parse and check


def _did_you_mean(word: str, choices: list[str], otherwise: str, cutoff: float = 0.6) -> str:
    """The fix for a misspelt name: the closest choice, or `otherwise` when none is close."""
    hint = difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)
    return f"did you mean '{hint[0]}'?" if hint else otherwise


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
            kind = {"nodes": "node", "pods": "pod", "containers": "container",
                    "checks": "check"}.get(loc[i - 1], "item")
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(f"{kind} '{name}'" if isinstance(name, str) else f"{kind} #{key + 1}")
            cur = item
        else:
            cur = cur.get(key) if isinstance(cur, dict) else None
    return ", ".join(parts)


def _fields_of(loc: Loc) -> list[str]:
    models = {"nodes": NodeSpec, "pods": PodSpec, "containers": ContainerSpec, "network": NetworkSpec,
              "outside": OutsideSpec, "checks": CheckSpec}
    if len(loc) == 3 and loc[0] == "containers":
        return list(DockerSpec.model_fields)
    for key in reversed(loc[:-1]):
        if isinstance(key, str):
            return [f.alias or n for n, f in models.get(key, ScenarioSpec).model_fields.items()]
    return list(ScenarioSpec.model_fields)


def _pydantic_error(err: dict, data: Any, where: _Where):
    loc = tuple(err["loc"])
    owner = _describe(loc, data)
    prefix = f"{owner}: " if owner else ""
    key = loc[-1] if loc else ""
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _fields_of(loc)
        fix = _did_you_mean(str(key), known, f"known fields: {', '.join(known)}", cutoff=0.5)
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
        # A misspelt field (`form:`) also makes the real one missing: report the typo first.
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        _pydantic_error(errors[0], data, where)
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
        where.fail((), "the lab has no valid name: add `name: my-lab` at the top")


def _build(spec: ScenarioSpec, lab: str, path: str, text: str, where: _Where) -> Lab:
    segments = _segments(spec.network.underlay, where)
    underlay = segments[0]
    cluster = ipaddress.IPv4Network(spec.network.podCIDR)
    for seg in segments:
        if seg.overlaps(cluster):
            where.fail(("network", "podCIDR"), f"podCIDR {cluster} overlaps the underlay {seg}: "
                                               f"use separate ranges")
    routed = len(segments) > 1
    router_ips = [str(next(s.hosts())) for s in segments] if routed else []

    seen: dict[str, Loc] = {}

    def claim(obj: str, loc: Loc):
        if obj in RESERVED:
            where.fail(loc, f"the name '{obj}' is reserved for netlab's own namespaces: "
                            f"choose another")
        if obj in seen:
            where.fail(loc, f"the name '{obj}' is used twice (line {where.line(seen[obj])}): "
                            f"nodes, pods and containers need distinct names")
        seen[obj] = loc

    nodes: list[Node] = []
    used_ips: dict[str, Loc] = {}
    subnets: list[tuple[ipaddress.IPv4Network, Loc, str]] = []
    uplinks: set[str] = set()
    for i, n in enumerate(spec.nodes):
        loc = ("nodes", i)
        claim(n.name, loc + ("name",))
        if n.ip is None and routed:
            where.fail(loc, f"node '{n.name}' has no ip and the underlay has several segments: "
                            f"give `ip:` inside the segment it is on")
        if n.ip is None:
            ip = underlay.network_address + 11 + i
            if not _is_host(ip, underlay):
                where.fail(loc, f"node '{n.name}' has no ip and the underlay {underlay} has no room "
                                f"left: give `ip:` or a larger underlay")
        else:
            ip = ipaddress.IPv4Address(n.ip)
            if routed:
                _check_routed_ip(n.name, ip, segments, router_ips, loc + ("ip",), where)
            elif not _is_host(ip, underlay):
                where.fail(loc + ("ip",), f"node '{n.name}': ip {ip} is not a host address of the "
                                          f"underlay {underlay}: pick one inside it")
        seg_index = next(k for k, s in enumerate(segments) if ip in s)
        if str(ip) in used_ips:
            where.fail(loc + ("ip",), f"node '{n.name}': ip {ip} is already used on line "
                                      f"{where.line(used_ips[str(ip)])}: give each node its own")
        used_ips[str(ip)] = loc + ("ip",)
        if n.podCIDR is None:
            # Node i gets the (i+1)th /24 of the cluster range, as 10.244.1.0/24 for node1.
            fits = cluster.prefixlen <= 24 and (i + 2) * 256 <= cluster.num_addresses
            subnet = ipaddress.IPv4Network(f"{cluster.network_address + (i + 1) * 256}/24") \
                if fits else None
            if subnet is None:
                where.fail(loc, f"node '{n.name}' has no podCIDR and network.podCIDR {cluster} has no "
                                f"/24 left for it: give `podCIDR:`")
        else:
            subnet = ipaddress.IPv4Network(n.podCIDR)
        sloc = loc + ("podCIDR",)
        for seg in segments:
            if subnet.overlaps(seg):
                where.fail(sloc, f"node '{n.name}': podCIDR {subnet} overlaps the underlay {seg}: "
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
        if uplink in {bridge_name(k) for k in range(len(segments))}:
            where.fail(loc + ("name",), f"node '{n.name}' would get the name of the underlay's "
                                        f"bridge '{uplink}': rename the node")
        uplinks.add(uplink)
        docker = ipaddress.IPv4Network(n.dockerCIDR or DOCKER_CIDR)
        nodes.append(Node(name=n.name, ns=f"{lab}-{n.name}", ip=str(ip),
                          prefixlen=segments[seg_index].prefixlen, pod_cidr=str(subnet),
                          gateway=str(next(subnet.hosts())), uplink=uplink,
                          segment=seg_index, vtep=str(subnet.network_address),
                          vtep_mac=vtep_mac(str(ip)),
                          docker_cidr=str(docker), docker_gw=str(next(docker.hosts()))))
    if spec.network.backend == "host-gw":
        _check_one_segment(nodes, segments, where)
    mtu = UNDERLAY_MTU - VXLAN_OVERHEAD if spec.network.backend == "vxlan" else UNDERLAY_MTU

    by_name = {n.name: n for n in nodes}
    taken: dict[str, dict[str, Loc]] = {n.name: {} for n in nodes}
    veths: dict[str, set[str]] = {n.name: set() for n in nodes}
    for i, p in enumerate(spec.pods):
        loc = ("pods", i)
        claim(p.name, loc + ("name",))
        if p.node not in by_name:
            fix = _did_you_mean(p.node, list(by_name), f"use one of {', '.join(by_name)}")
            where.fail(loc + ("node",), f"pod '{p.name}' is on unknown node '{p.node}': {fix}")
        node = by_name[p.node]
        if p.hostNetwork:
            if p.ip is not None:
                where.fail(loc + ("ip",), f"pod '{p.name}' has hostNetwork: true and so the node's "
                                          f"IP {node.ip}: remove `ip:`")
            _check_containers(p, loc, where)
            continue
        if p.ip is not None:
            subnet = ipaddress.IPv4Network(node.pod_cidr)
            ip = ipaddress.IPv4Address(p.ip)
            if not _is_host(ip, subnet):
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
    free = {n.name: _free_hosts(ipaddress.IPv4Network(n.pod_cidr), taken[n.name]) for n in nodes}
    for i, p in enumerate(spec.pods):
        if p.hostNetwork:
            node = by_name[p.node]
            pods.append(Pod(name=p.name, ns=node.ns, node=p.node, ip=node.ip, host_veth="",
                            containers=tuple(_container(p.name, c) for c in p.containers),
                            host_network=True))
            continue
        ip = p.ip or next(free[p.node], None)
        if ip is None:
            node = by_name[p.node]
            where.fail(("pods", i, "node"), f"node '{node.name}''s podCIDR {node.pod_cidr} has no "
                                            f"address left for pod '{p.name}': use a larger podCIDR")
        containers = tuple(_container(p.name, c) for c in p.containers)
        pods.append(Pod(name=p.name, ns=f"{lab}-{p.name}", node=p.node, ip=ip,
                        host_veth=ifname_for(p.name, "veth-"), containers=containers, mtu=mtu))

    _check_docker_cidrs(spec, nodes, underlay, cluster, where)
    containers = _docker_containers(spec, lab, by_name, pods, veths, claim, where)
    if spec.outside is not None and routed:
        where.fail(("outside",), "an outside world needs a flat underlay (one subnet); this one has "
                                 "several segments: drop `outside:` or use one segment")
    outside = _outside(spec, lab, nodes, underlay, cluster, where)
    return Lab(name=lab, source=path, text=text, backend=spec.network.backend,
               underlay=", ".join(str(s) for s in segments), nodes=tuple(nodes), pods=tuple(pods),
               underlay_ns=f"{lab}-underlay", mtu=mtu, segments=tuple(str(s) for s in segments),
               router_ns=f"{lab}-router" if routed else "", router_ips=tuple(router_ips),
               containers=containers, outside=outside,
               checks=_checks(spec, nodes, pods, where))


def _segments(underlay: Union[str, list[str]], where: _Where) -> list[ipaddress.IPv4Network]:
    """The underlay's segments: one for a flat switch, several joined by `<lab>-router`."""
    if isinstance(underlay, str):
        return [ipaddress.IPv4Network(underlay)]
    segments: list[ipaddress.IPv4Network] = []
    for k, text in enumerate(underlay):
        seg = ipaddress.IPv4Network(text)
        for j, other in enumerate(segments):
            if seg.overlaps(other):
                first = where.line(("network", "underlay", j))
                where.fail(("network", "underlay", k), f"underlay segment {seg} overlaps segment "
                                                       f"{other} (line {first}): give each segment "
                                                       f"its own subnet")
        segments.append(seg)
    return segments


def _check_routed_ip(node: str, ip: ipaddress.IPv4Address, segments: list, router_ips: list,
                     loc: Loc, where: _Where) -> None:
    for seg, router in zip(segments, router_ips):
        if _is_host(ip, seg):
            if str(ip) == router:
                where.fail(loc, f"node '{node}': ip {ip} is the lab router's address on {seg} "
                                f"(the segment's first host): pick another")
            return
    where.fail(loc, f"node '{node}': ip {ip} is not a host address of any underlay segment "
                    f"({', '.join(map(str, segments))}): pick one inside a segment")


def _check_one_segment(nodes: list[Node], segments: list, where: _Where) -> None:
    """host-gw routes a pod subnet via the node's own IP, so that IP must be on the same switch."""
    used = sorted({n.segment for n in nodes})
    if len(used) < 2:
        return
    groups = [f"{', '.join(n.name for n in nodes if n.segment == k)} ({segments[k]})" for k in used]
    loc = ("network", "backend")
    if loc not in where.lines:   # backend left out: host-gw by default
        loc = ("network", "underlay")
    where.fail(loc, f"backend host-gw routes a pod subnet via the node's IP, which only works "
                     f"between nodes on one segment, but nodes {' and '.join(groups)} share no "
                     f"segment: use backend: vxlan or put them on one segment")


def _is_host(ip: ipaddress.IPv4Address, net: ipaddress.IPv4Network) -> bool:
    return ip in net and ip not in (net.network_address, net.broadcast_address)


def _free_hosts(subnet: ipaddress.IPv4Network, taken: dict):
    """Pod addresses in order from the second host on (the first is cni0's), skipping taken ones."""
    hosts = subnet.hosts()
    next(hosts)
    return (str(h) for h in hosts if str(h) not in taken)


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


# ---------------------------------------------------------------- Docker modes and the outside world


def _check_docker_cidrs(spec: ScenarioSpec, nodes: list[Node], underlay, cluster, where: _Where):
    """Every node's docker0 subnet stays clear of the underlay and of the pod ranges.

    Nodes may share one docker subnet (by default they all have 172.17.0.0/16, as Docker does):
    a container's address means something only on its own node.
    """
    for i, node in enumerate(nodes):
        docker = ipaddress.IPv4Network(node.docker_cidr)
        loc = ("nodes", i, "dockerCIDR")
        fix = "give the node another `dockerCIDR:`, such as 172.18.0.0/16"
        if docker.overlaps(underlay):
            where.fail(loc, f"node '{node.name}': dockerCIDR {docker} overlaps the underlay "
                            f"{underlay}: {fix}")
        if docker.overlaps(cluster):
            where.fail(loc, f"node '{node.name}': dockerCIDR {docker} overlaps network.podCIDR "
                            f"{cluster}: {fix}")
        for other in nodes:
            if docker.overlaps(ipaddress.IPv4Network(other.pod_cidr)):
                where.fail(loc, f"node '{node.name}': dockerCIDR {docker} overlaps node "
                                f"'{other.name}''s podCIDR {other.pod_cidr}: {fix}")


def parse_port(value: Any) -> PortMap:
    """`"8081:8080"` or `"5353:53/udp"` -> PortMap; ValueError with the fix otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{value} is a number, not a mapping (YAML reads an unquoted 81:30 as a "
                         f"number in base 60): write it quoted, like \"8081:8080\"")
    text = str(value)
    m = re.fullmatch(r"(\d+):(\d+)(?:/(tcp|udp))?", text)
    if not m:
        raise ValueError(f"'{text}' is not a published port: write hostPort:containerPort, like "
                         f"\"8081:8080\" or \"5353:53/udp\"")
    host, cont = int(m.group(1)), int(m.group(2))
    for port in (host, cont):
        if not 1 <= port <= 65535:
            raise ValueError(f"'{text}': port {port} is out of range: use 1 to 65535")
    return PortMap(host, cont, m.group(3) or "tcp")


def _docker_containers(spec: ScenarioSpec, lab: str, by_name: dict, pods: list[Pod],
                       veths: dict, claim, where: _Where) -> tuple[DockerContainer, ...]:
    # Ports a node's own stack answers on, per (proto, port): host-mode containers and
    # hostNetwork pods listen there, bridge containers publish there.
    node_ports: dict[str, dict[tuple[str, int], str]] = {n: {} for n in by_name}

    def take(node: str, proto: str, port: int, who: str, loc: Loc):
        other = node_ports[node].get((proto, port))
        if other is not None:
            where.fail(loc, f"{who}: port {port}/{proto} on node '{node}' is already taken by "
                            f"{other}: use another host port")
        node_ports[node][(proto, port)] = who

    for i, p in enumerate(spec.pods):
        if p.hostNetwork:
            for j, c in enumerate(p.containers):
                if c.image is not None or c.port is not None:
                    take(p.node, "tcp", c.port or DEFAULT_PORT, f"pod '{p.name}' (hostNetwork)",
                         ("pods", i, "containers", j, "port"))

    free = {n: (str(h) for h in list(ipaddress.IPv4Network(node.docker_cidr).hosts())[1:])
            for n, node in by_name.items()}
    out: list[DockerContainer] = []
    for i, c in enumerate(spec.containers):
        loc = ("containers", i)
        claim(c.name, loc + ("name",))
        who = f"container '{c.name}'"
        if c.node not in by_name:
            fix = _did_you_mean(c.node, list(by_name), f"use one of {', '.join(by_name)}")
            where.fail(loc + ("node",), f"{who} is on unknown node '{c.node}': {fix}")
        node = by_name[c.node]
        if (c.image is None) == (c.command is None):
            where.fail(loc, f"{who}: give either `image: netexec` (netlab's HTTP server) or "
                            f"`command: [...]`, not both or neither")
        ports: list[PortMap] = []
        for k, value in enumerate(c.ports):
            try:
                pm = parse_port(value)
            except ValueError as e:
                where.fail(loc + ("ports", k), f"{who}: {e}")
            if c.network == "bridge":
                take(c.node, pm.proto, pm.host_port, who, loc + ("ports", k))
            ports.append(pm)
        if c.image == NETEXEC:
            port = c.port or DEFAULT_PORT
            # netexec answers HTTP on the TCP port and, for docker containers, UDP on the same
            # number (like agnhost's --udp-port), so a published /udp port can be proven too.
            process = Container(name=c.name, argv=netexec_argv(c.name, port)
                                + ("--udp-port", str(port)), port=port, image=NETEXEC)
        else:
            process = Container(name=c.name, argv=tuple(c.command or ()), port=c.port, image=None)
        if c.network == "host" and process.port is not None:
            take(c.node, "tcp", process.port, f"{who} (host mode)", loc + ("port",))
            if process.image == NETEXEC:
                take(c.node, "udp", process.port, f"{who} (host mode)", loc + ("port",))
        ip, veth, ns = None, None, f"{lab}-{c.name}"
        if c.network == "host":
            ip, ns = node.ip, node.ns
        elif c.network == "bridge":
            ip = next(free[c.node], None)
            if ip is None:
                where.fail(loc + ("node",), f"node '{node.name}''s dockerCIDR {node.docker_cidr} "
                                            f"has no address left for {who}: give the node a "
                                            f"larger `dockerCIDR:`")
            veth = ifname_for(c.name, "veth-")
            if veth in veths[c.node]:
                where.fail(loc + ("name",), f"{who} would get the same interface name '{veth}' "
                                            f"as a pod or container on '{node.name}': rename it")
            veths[c.node].add(veth)
        out.append(DockerContainer(name=c.name, node=c.node, mode=c.network, ns=ns, ip=ip,
                                   host_veth=veth, ports=tuple(ports), process=process))
    return tuple(out)


def _outside(spec: ScenarioSpec, lab: str, nodes: list[Node], underlay, cluster,
             where: _Where) -> Optional[Outside]:
    """The outside world sits on the underlay's last host address, routing to its web server."""
    if spec.outside is None:
        return None
    ip = ipaddress.IPv4Address(spec.outside.ip)
    router = underlay.broadcast_address - 1
    loc = ("outside", "ip")
    nets = [(underlay, "the underlay"), (cluster, "network.podCIDR")]
    nets += [(ipaddress.IPv4Network(n.docker_cidr), f"node '{n.name}''s dockerCIDR") for n in nodes]
    nets += [(ipaddress.IPv4Network(n.pod_cidr), f"node '{n.name}''s podCIDR") for n in nodes]
    for net, what in nets:
        if ip in net:
            where.fail(loc, f"outside ip {ip} is inside {what} {net}: use an address outside the "
                            f"lab's ranges, such as {OUTSIDE_IP}")
    for i, n in enumerate(nodes):
        if n.ip == str(router):
            where.fail(("nodes", i, "ip"), f"node '{n.name}': ip {router} is the outside world's "
                                           f"router on the underlay: pick another node ip")
    return Outside(ns=f"{lab}-outside", ip=str(ip), port=spec.outside.port, router=str(router),
                   prefixlen=underlay.prefixlen)


def _checks(spec: ScenarioSpec, nodes: list[Node], pods: list[Pod], where: _Where
            ) -> tuple[ScenarioCheck, ...]:
    """Check the scenario's `checks:` against the lab: known endpoints, served ports, NAT."""
    ips = {p.name: p.ip for p in pods} | {n.name: n.ip for n in nodes}
    by_ip = {ip: name for name, ip in ips.items()}
    ports: dict[str, dict[int, Optional[str]]] = {n.name: {NODE_PORT: NETEXEC} for n in nodes}
    for p in pods:
        ports[p.name] = {c.port: c.image for c in p.containers if c.port is not None}
    out = []
    for i, c in enumerate(spec.checks):
        loc = ("checks", i)
        who = f"check '{c.name}'" if c.name else f"check #{i + 1}"
        if c.from_ not in ips:
            fix = _did_you_mean(c.from_, list(ips), f"use one of {', '.join(ips)}")
            where.fail(loc + ("from",), f"{who}: from: unknown pod or node '{c.from_}': {fix}")
        if c.to in ips:
            dst, dst_ip = c.to, ips[c.to]
        else:
            try:
                dst_ip = str(ipaddress.IPv4Address(c.to))
            except ValueError:
                fix = _did_you_mean(c.to, list(ips),
                                    f"use a pod or node ({', '.join(ips)}) or an IPv4 address")
                where.fail(loc + ("to",), f"{who}: to: unknown pod or node '{c.to}': {fix}")
            dst = by_ip.get(dst_ip, dst_ip)
        served = ports.get(dst)
        if c.nat is not None:
            if c.port is None:
                where.fail(loc + ("nat",), f"{who}: nat needs a `port:` where netlab's server "
                                           f"reports the address it saw")
            if c.expect == "unreachable":
                where.fail(loc + ("nat",), f"{who}: nat says what a server sees, but the check "
                                           f"expects unreachable: drop `nat:` or expect reachable")
            if served is None or served.get(c.port, "") != NETEXEC:
                where.fail(loc + ("port",), f"{who}: nat needs netlab's server at {c.to}:{c.port}: "
                                            f"a pod's `image: netexec` port, or a node's port "
                                            f"{NODE_PORT}")
        if c.port is not None and c.expect == "reachable" and served is not None \
                and c.port not in served:
            listed = ", ".join(str(p) for p in served) or "none"
            where.fail(loc + ("port",), f"{who}: nothing in '{dst}' listens on port {c.port} "
                                        f"(its ports: {listed}): use one of them or expect "
                                        f"unreachable")
        target = f"{c.to}:{c.port}" if c.port else c.to
        out.append(ScenarioCheck(line=where.line(loc), name=c.name or f"{c.from_} -> {target}",
                                 src=c.from_, dst=dst, dst_ip=dst_ip, port=c.port,
                                 expect=c.expect, nat=c.nat))
    return tuple(out)
