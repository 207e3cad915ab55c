"""A lab's files in /etc/netns/<ns>/ (each pod's and node's resolv.conf): written for namespaces the
lab made, recorded in its journal before they are written, removed by `down` and `netlab clean`.

`ip netns exec NS` (and netlab's own processes, runtime.kernel.etc_files) bind-mount every file of
/etc/netns/NS/ over its namesake in /etc inside a private mount namespace, so the host's
/etc/resolv.conf is never touched.
"""

from __future__ import annotations

import os

from . import kernel as K

NAMES = ("resolv.conf",)   # the only files netlab writes there


def _dir(ns: str) -> str:
    if not ns or "/" in ns or ns in (".", ".."):
        raise ValueError(f"not a namespace name: {ns!r}")
    return os.path.join(K.ETC_NETNS, ns)


def write(ns: str, name: str, text: str) -> str:
    """Write /etc/netns/<ns>/<name> atomically (a reader never sees half a file)."""
    if name not in NAMES:
        raise ValueError(f"netlab writes only {', '.join(NAMES)} in /etc/netns, not {name!r}")
    d = _dir(ns)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    tmp = os.path.join(d, f".{name}.netlab-tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def remove(ns: str) -> bool:
    """Remove netlab's files of /etc/netns/<ns>/ and the directory when nothing else is in it.
    Harmless when gone; returns whether anything was there."""
    d = _dir(ns)
    found = False
    for name in NAMES:
        for path in (os.path.join(d, name), os.path.join(d, f".{name}.netlab-tmp")):
            try:
                os.unlink(path)
                found = True
            except FileNotFoundError:
                pass
    try:
        os.rmdir(d)
    except OSError:
        pass   # gone already, or holds files somebody else put there
    return found


def exists(ns: str) -> bool:
    return os.path.isdir(_dir(ns))
