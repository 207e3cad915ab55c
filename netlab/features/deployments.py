"""Deployments and Kubernetes namespaces, pure: what `deployments:` and `namespaces:` become, and
the Pods a deployment's replicas are, named as the deployment controller names them.

A replica is `<deployment>-<pod-template-hash>-<suffix>`: the hash is the ReplicaSet's (FNV-32a of
the pod template, safe-encoded, as pkg/controller/deployment computes it), the 5-character suffix
comes from the scenario instead of the random source, so the same scenario gives the same names.
Replicas spread round-robin over the nodes.

Pods come and go (`netlab scale`, `netlab delete`): the lab's state keeps the current replicas of
each deployment (`live`: name, node and address of each, and the next replica index), and the
scenario is parsed again with them, so every command sees the pods that run now.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

# Kubernetes' rand.SafeEncodeString alphabet: no vowels, no 0/1/3 (no words, no look-alikes).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
BUILTIN_NAMESPACES = ("default", "kube-system")
NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class KubeNamespace:
    """A Kubernetes namespace: its name and labels (kubernetes.io/metadata.name among them)."""
    name: str
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Deployment:
    """A deployment as the lab has it: what `scale` changes and `get deployments` shows."""
    name: str
    namespace: str
    replicas: int                     # as now (after scale), not only as the scenario says
    labels: tuple[tuple[str, str], ...]
    template_hash: str
    pods: tuple[str, ...]             # its current pods' names

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Replica:
    """One replica before its address is allocated: its name, node and (if kept) address."""
    name: str
    node: str
    ip: Optional[str]


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    """Kubernetes' rand.SafeEncodeString: each byte to a letter of a vowel-free alphabet."""
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in s.encode())


def template_hash(labels: Mapping[str, str], containers: Sequence[Any]) -> str:
    """The ReplicaSet's pod-template-hash: FNV-32a of the pod template, its decimal value
    safe-encoded (up to 10 characters). `containers` are pydantic specs."""
    template = {"labels": dict(labels),
                "containers": [c.model_dump(exclude_defaults=True) for c in containers]}
    return safe_encode(str(_fnv32a(json.dumps(template, sort_keys=True).encode())))


def replica_name(deployment: str, namespace: str, hash_: str, index: int) -> str:
    # Kubernetes draws the 5 characters at random; here they come from the scenario.
    digest = hashlib.sha256(f"{namespace}/{deployment}/{hash_}/{index}".encode()).digest()
    return f"{deployment}-{hash_}-" + "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)]
                                              for b in digest[:5])


def replicas(name: str, namespace: str, count: int, hash_: str, nodes: Sequence[str],
             live: Optional[Mapping] = None) -> list[Replica]:
    """The replicas of one deployment: those the lab's state keeps (`live`: {"pods": [[name,
    node, ip], ...]}), or else `count` new ones spread round-robin over `nodes`."""
    if live is not None:
        return [Replica(n, node, ip) for n, node, ip in live["pods"]]
    return [Replica(replica_name(name, namespace, hash_, i), nodes[i % len(nodes)], None)
            for i in range(count)]


def next_node(nodes: Sequence[str], current: Sequence[str]) -> str:
    """Where a new replica goes: the node with the fewest of the deployment's pods (the
    scheduler's spreading), the first in order on a tie."""
    return min(nodes, key=lambda n: (list(current).count(n), list(nodes).index(n)))


def namespaces(declared: Sequence[Any]) -> tuple[KubeNamespace, ...]:
    """The declared namespaces plus the built-in ones, each labelled with its own name."""
    out: dict[str, dict] = {n: {} for n in BUILTIN_NAMESPACES}
    for ns in declared:
        out[ns.name] = dict(ns.labels)
    return tuple(KubeNamespace(n, tuple(sorted({**labels, NAME_LABEL: n}.items())))
                 for n, labels in out.items())
