"""The schema's building blocks, shared by the features: the strict base of every section, the
checks of names, addresses and subnets, and `Where`, which turns a location in the scenario into
its line for an error that names the file, the line and the fix.

`Build` is what the features fill while a scenario is checked and allocated (see model.parse):
the Lab's fields, its parts, its namespaces, and the names already taken.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict

from .errors import ScenarioError

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
RESERVED = {"underlay", "outside", "router"}
Loc = tuple


def check_name(value: str) -> str:
    if not NAME_RE.match(value) or len(value) > 63:
        raise ValueError(f"'{value}' is not a valid name: use lowercase letters, digits and '-', "
                         f"starting and ending with a letter or digit, at most 63 characters")
    return value


def check_ipv4(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"'{value}' is not an IPv4 address: write it like 192.168.1.11") from None
    return value


def check_cidr(value: str) -> str:
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



class Spec(BaseModel):
    """Every section of a scenario: unknown fields are errors, values are frozen."""
    model_config = ConfigDict(extra="forbid", frozen=True)



def name_field(cls, v):
    return check_name(v)


def ipv4_field(cls, v):
    return v if v is None else check_ipv4(v)


def cidr_field(cls, v):
    return v if v is None else check_cidr(v)


def did_you_mean(word: str, choices: list[str], otherwise: str, cutoff: float = 0.6) -> str:
    """The fix for a misspelt name: the closest choice, or `otherwise` when none is close."""
    hint = difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)
    return f"did you mean '{hint[0]}'?" if hint else otherwise



class Where:
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



@dataclass
class Build:
    """The Lab being built: each feature checks its section, allocates, and adds its part here."""
    spec: Any                       # the whole ScenarioSpec
    lab: str                        # the lab's name
    where: Where
    fields: dict = field(default_factory=dict)      # the Lab's own fields (nodes, pods, ...)
    parts: dict = field(default_factory=dict)       # each feature's part, by attribute name
    namespaces: list = field(default_factory=list)  # in the order they are made
    scratch: dict = field(default_factory=dict)     # what one feature leaves for a later one
    _names: dict = field(default_factory=dict)

    def claim(self, obj: str, loc: Loc) -> None:
        """A name of a node, pod or container: unique among them, and none of netlab's own."""
        where = self.where
        if obj in RESERVED:
            where.fail(loc, f"the name '{obj}' is reserved for netlab's own namespaces: "
                            f"choose another")
        if obj in self._names:
            where.fail(loc, f"the name '{obj}' is used twice (line {where.line(self._names[obj])}): "
                            f"nodes, pods and containers need distinct names")
        self._names[obj] = loc


def is_host(ip: ipaddress.IPv4Address, net: ipaddress.IPv4Network) -> bool:
    return ip in net and ip not in (net.network_address, net.broadcast_address)
