"""The features' faults (Feature.faults()), like the base ones in test_break_faults.py: a real lab
is broken with each, verify must fail exactly the checks the model says the fault breaks (and
may fail those it says kube-proxy's random endpoint choice decides, no others), each
with a reason naming the namespace and the object the fault changed; the fault's own fix typed
by hand (Broken.fix, the workshop's answer) repairs it; `--undo` gives a lab that verifies
again, and `down` leaves nothing behind."""

from __future__ import annotations

import pytest

from breakit import by_hand, check_key, failures
from conftest import SCENARIOS, lab_fixture, netlab, requires_root
from netlab import exercises as E, model
from netlab.features import FAULTS
from netlab.features.faults import BASE_FAULTS
from netlab.verify import engine

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
    path = str(SCENARIOS / f"{name}.yaml")
    netlab("up", path, "--name", lab)
    the_lab = model.load(path, lab)
    target = target or FAULTS[fault].targets(the_lab)[0]
    assert target in FAULTS[fault].targets(the_lab)
    checks = engine.derive(the_lab)
    want = {check_key(c) for c in E.expected(the_lab, fault, target, checks)}
    may = {check_key(c) for c in E.uncertain(the_lab, fault, target, checks)}
    assert want, f"{fault} on {target} breaks nothing in the model"
    broken = FAULTS[fault].make(the_lab, target)

    netlab("break", lab, fault, "--on", target)
    got = failures(lab)
    assert want <= set(got) <= want | may, (f"unexpected failures: {sorted(set(got) - want - may)}"
                                            f"\nmissing failures: {sorted(want - set(got))}")
    for reason in got.values():
        assert broken.ns in reason and broken.obj in reason, reason

    by_hand(broken.fix)          # the workshop's answer repairs it
    got = failures(lab)
    assert not got, (broken.fix, list(got.values()))

    netlab("break", lab, "--undo")
    got = failures(lab)
    assert not got, list(got.values())
