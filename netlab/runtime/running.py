"""The labs that are up, as the other commands see them: a lab loaded back from the scenario
text it was built from (also one node of a lab on this host), and the status of its processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import model
from ..core.errors import NetlabError
from ..core.lab import Lab, Pod
from . import kernel as K
from . import nodehost, workloads
from ..core.servers import SHARED
from .state import LabState


def load_up(name: str) -> Lab:
    """The Lab of a lab that is up, parsed again from the scenario text it was built from."""
    state = LabState(name)
    info = state.info()
    if not info:
        raise NetlabError(f"lab {name} is not up: see `netlab status`")
    if "@" in name:   # one node of a lab, on this host (up --node): see nodehost
        lab_name, node = name.rsplit("@", 1)
        lab = model.parse(info["text"], info.get("source", "<scenario>"), lab_name)
        return nodehost.local_view(lab, node)
    # The pods that run now: the scenario's, with what `scale` and `delete` changed since.
    return model.parse(info["text"], info.get("source", "<scenario>"), name,
                       live=state.journal().live or None)


@dataclass
class PodStatus:
    pod: Pod
    running: int          # containers whose process is alive
    present: bool         # the namespace exists


def _running(lab: Lab) -> dict[str, int]:
    """How many of each owner's (pod's or container's) recorded processes are alive."""
    alive: dict[str, int] = {}
    shared_alive: set[str] = set()
    for pid, what in LabState(lab.name).journal().pids.items():
        if workloads.alive(pid):
            owner = what.split("/", 1)[0]
            alive[owner] = alive.get(owner, 0) + 1
            if what.endswith("/" + SHARED):   # the node's server runs its pods' servers too
                alive[owner] -= 1
                shared_alive.add(owner)
    from ..core.servers import served
    for pod, node in served(lab).items():
        if node in shared_alive:
            alive[pod] = alive.get(pod, 0) + 1
    return alive


def pod_status(lab: Lab) -> list[PodStatus]:
    alive = _running(lab)
    return [PodStatus(p, alive.get(p.name, 0), K.netns_exists(p.ns)) for p in lab.pods]


@dataclass
class Status:
    """What show needs of a lab's processes: how many are alive per owner, which namespaces exist."""
    alive: dict

    @staticmethod
    def present(ns: str) -> bool:
        return K.netns_exists(ns)


def status(lab: Lab) -> Status:
    return Status(_running(lab))
