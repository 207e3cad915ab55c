"""The feature interface: what one part of netlab (the underlay, pods, Docker modes, Services...)
provides, in one module, so that adding a feature is adding a module and registering it once
(netlab/features/__init__.py).

A feature is a plain object with these members; every one has a default that does nothing, so a
feature writes only what it has:

- `schema`: its sections of the scenario, `{field: (type, default)}`; a field named
  "network.X" extends the `network:` section.
- `build(spec, b)`: check its sections against the rest of the lab and allocate, raising errors
  through `b.where`; put its part in `b.parts` (read back as `lab.<name>`), its namespaces in
  `b.namespaces`.
- `ops(lab, phase)`: its operations in each phase of `up` (PHASES, in order).
- `node_ops(lab, node, underlay, phase)`: its part of one node built on a real host (`up --node`);
  raise NotOnHost where it cannot be.
- `rules()`: its verify rules, `{name: derive(lab) -> [Check]}`; `probes()`: the probe and judge
  of any check method of its own (verify.engine knows ping, http, udp, mtu, addr and addrs).
- `reload(lab)`: the operations that bring its rules up to date after pods came or went
  (`netlab scale`, `netlab delete`: runtime/scale.py), e.g. kube-proxy's tables;
- `refine(lab, checks)`: the checks of every rule as this feature changes what they expect
  (NetworkPolicy expects the pairs it denies to be unreachable); the default keeps them;
- `faults()`: the faults of the break-it exercises it contributes (core.fault.Fault objects).
- `needs(lab)`: what `up` needs on this machine (preflight asks every feature).
- `show(lab, status)`: its part of `netlab show --json`; `render(data)`: what it adds to the
  text of `netlab show` (lines, or (columns, rows) for a table); `rows(data)`: rows it adds to
  the pods table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import NetlabError

# The phases of `up`, in order; every feature adds its operations to each one in turn.
#   namespaces: made first, from Lab.namespaces (their marks make `down` safe);
#   links:      bridges, veth pairs, addresses, the features' own nft tables;
#   routes:     routes, overlays, MTUs, the outside world, rules that need every link;
#   processes:  the scenario's containers and servers;
#   probes:     netlab's own servers that verify talks to, last.
PHASES = ("links", "routes", "processes", "probes")


class NotOnHost(NetlabError):
    """A feature that cannot be built on a real host (`up --node`), with the reason."""


@dataclass
class Needs:
    """What a lab needs on this machine: tools on PATH, link kinds of the kernel, and commands that
    the lab's containers run (who, argv[0])."""
    tools: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    commands: list[tuple[str, str]] = field(default_factory=list)
    # Checks of the kernel or host that only a feature knows (a module, a sysctl): each returns
    # a problem to refuse the lab with, or "".
    checks: list[Callable[[], str]] = field(default_factory=list)


class Feature:
    """The defaults: a feature overrides only what it provides."""
    name = ""
    schema: dict[str, tuple[Any, Any]] = {}

    def build(self, spec: Any, b: Any) -> None:
        return None

    def ops(self, lab: Any, phase: str) -> list:
        return []

    def node_ops(self, lab: Any, node: Any, underlay: str, phase: str) -> list:
        return []

    def rules(self) -> dict[str, Callable]:
        return {}

    def probes(self) -> dict[str, Any]:
        return {}

    def reload(self, lab: Any) -> list:
        return []

    def refine(self, lab: Any, checks: list) -> list:
        return checks

    def faults(self) -> list:
        return []

    def needs(self, lab: Any) -> Needs:
        return Needs()

    def show(self, lab: Any, status: Any) -> dict:
        return {}

    def render(self, data: dict) -> list[Any]:
        return []

    def rows(self, data: dict) -> list[tuple[str, ...]]:
        return []
