"""Verify names each fault: for every fault of `netlab break --list`, a real lab is broken with it
and verify must fail exactly the checks the model says the fault breaks (no more, no fewer),
each with a reason naming the namespace and the object the fault changed; the fault's own fix
typed by hand (Broken.fix, the workshop's answer) repairs it; `--undo` then gives a lab that
verifies again, and `down` leaves nothing behind."""

from __future__ import annotations

import pytest

from breakit import break_fix_undo
from conftest import lab_fixture, requires_root
from netlab.features.faults import BASE_FAULTS

pytestmark = requires_root

lab = lab_fixture("brk")

# Every fault of the catalogue, on a lab it applies to, with the place it is applied.
CASES = [
    ("three-node", "route-deleted", "node1"),
    ("three-node", "ip-forward-off", "node2"),
    ("three-node", "pod-route-wrong", "web"),
    ("three-node", "veth-down", "api"),
    ("three-node", "cni0-no-address", "node3"),
    ("three-node", "masquerade", "node1"),
    ("three-node", "forward-drop", "node2"),
    ("overlay", "mtu-1500", "web"),
    ("overlay", "neigh-missing", "node1"),
    ("overlay", "fdb-missing", "node2"),
    ("docker-modes", "dnat-missing", "c-bridge"),
    # the node and pod faults again across an overlay on a routed underlay
    ("overlay", "ip-forward-off", "node1"),
    ("overlay", "forward-drop", "node3"),
    ("overlay", "masquerade", "node3"),
    ("overlay", "cni0-no-address", "node1"),
    ("overlay", "veth-down", "db"),
    ("overlay", "pod-route-wrong", "api"),
]


def test_every_base_fault_has_a_case():
    # the features' own faults: test_break_features.py
    assert sorted({fault for _, fault, _ in CASES}) == sorted(f.name for f in BASE_FAULTS)


@pytest.mark.parametrize("scenario,fault,target", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_verify_fails_exactly_what_the_fault_breaks_and_names_it(lab, scenario, fault, target):
    assert not break_fix_undo(lab, scenario, fault, target)    # the base faults: no "may fail"
