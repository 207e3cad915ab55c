"""The features' faults (Feature.faults()), like the base ones in test_break_faults.py: a real lab
is broken with each, verify must fail exactly the checks the model says the fault breaks (and
may fail those it says kube-proxy's random endpoint choice decides, no others), each
with a reason naming the namespace and the object the fault changed; the fault's own fix typed
by hand (Broken.fix, the workshop's answer) repairs it; `--undo` gives a lab that verifies
again, and `down` leaves nothing behind."""

from __future__ import annotations

import pytest

from breakit import break_fix_undo
from conftest import lab_fixture, requires_root
from netlab.features import FAULTS
from netlab.features.faults import BASE_FAULTS

pytestmark = requires_root

lab = lab_fixture("flt")

CASES = [
    ("same-node", "bridge-nf-off", "node1"),
    ("dns", "endpoint-chain-missing", "web"),
    ("dns", "resolv-no-search", "shopper"),
    ("dns", "kube-dns-down", ""),
    ("services", "hairpin-off", ""),    # "": the first target (a pod of a Deployment),
    ("ingress", "ingress-path-type", "shop/api"),
    ("netpol-dns", "policy-blocks-dns", "shop"),
    # where some checks may fail or pass, as kube-proxy's random endpoint choice decides
    ("services", "bridge-nf-off", "node1"),
    ("services", "endpoint-chain-missing", ""),
]


def test_every_fault_of_the_catalogue_has_a_case():
    base = {f.name for f in BASE_FAULTS}
    assert sorted({fault for _, fault, _ in CASES}) == sorted(set(FAULTS) - base)


@pytest.mark.parametrize("name,fault,target", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_verify_fails_exactly_what_the_fault_breaks_and_names_it(lab, name, fault, target):
    break_fix_undo(lab, name, fault, target)
