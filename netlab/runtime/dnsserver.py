"""The cluster DNS server of a lab that is up, when its pods change (`scale`, `delete`): dnsmasq.conf
rewritten from the lab as it is now, and dnsmasq restarted, since dnsmasq rereads --conf-file only
when it starts (SIGHUP rereads its hosts files alone; see netlab/features/dns/model.py). The removed pods'
/etc/netns files go with them; the new pods' come with their namespaces (their EtcNetnsFile ops).
"""

from __future__ import annotations

import time
from typing import Sequence

from ..core.lab import Lab, Pod
from ..core.ops import argv_of
from ..features import dns
from . import etcnetns, workloads
from . import kernel as K
from .state import LabState


def refresh(state: LabState, new: Lab, removed: Sequence[Pod]) -> bool:
    """After a change of pods: forget the removed pods' resolv.conf, and restart the DNS server
    on a new config when the records changed. Whether it was restarted."""
    for p in removed:
        if not p.host_network:
            etcnetns.remove(p.ns)
    if new.dns is None:
        return False
    text = dns.dnsmasq_conf(new)
    try:
        with open(new.dns.conf) as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    state.write(new.dns.conf, text)
    restart(state, new)
    return True


def restart(state: LabState, lab: Lab) -> int:
    """Stop every process of the DNS pod and start dnsmasq again (recorded in the journal, whose
    journal must be open); its pid."""
    pod = lab.pod(lab.dns.pod)
    inode = K.netns_inode(pod.ns)
    workloads.stop(set(workloads.pids_in([inode] if inode else [])))
    c = pod.containers[0]
    pid = workloads.spawn(pod.ns, argv_of(c), state.log_path(pod.name, c.name), state.lab)
    state.record(f"pid {pid} {pod.name}/{c.name}")
    wait_listening(lab)
    return pid


def wait_listening(lab: Lab, timeout: float = 5.0) -> bool:
    """Wait (bounded, polling) until the DNS pod's server listens on port 53, so a query made
    right after `up` (or a restart) is answered; whether it does. A loaded machine may take a
    while to schedule a process that was just started."""
    pod = lab.pod(lab.dns.pod)
    inode = K.netns_inode(pod.ns)
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        pids = workloads.pids_in([inode] if inode else [])
        if any(_listens(pid, 53) for pid in pids):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _listens(pid: int, port: int) -> bool:
    """A TCP socket listening on `port` in the namespace of `pid` (dnsmasq binds UDP first)."""
    want = f":{port:04X}"
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            return any(w[3] == "0A" and w[1].endswith(want)
                       for w in (line.split() for line in list(f)[1:]) if len(w) > 3)
    except OSError:
        return False
