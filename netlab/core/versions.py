"""Version strings compared as numbers ("1.1.0" > "1.0.0"), for the CNI spec's versions: a tiny
module of its own, so the netlab-cni plugin imports it without netlab's heavier modules."""

from __future__ import annotations


def version_key(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (0,)
