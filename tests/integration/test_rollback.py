"""Rollback: the Nth step of `up` fails, for every N of the default scenario's plan; nothing is left.

The fault is injected in process: a Kernel subclass (passed to lifecycle.up as make_kernel) whose
Nth operation fails, and a wrapper around workloads.spawn for the Spawn steps, counted together.
Odd steps fail before doing their work (the kernel refused), even steps after it (the object
exists, then the step reports failure), so rollback is proven both ways for each kind of step.
"""

from __future__ import annotations

import pytest

from conftest import leftovers, requires_root, unique_name
from netlab.runtime import kernel as K
from netlab import model, plan
from netlab.runtime import lifecycle, workloads
from netlab.core.errors import KernelError

pytestmark = requires_root

STEPS = len(plan.build(model.load(None, "rl-count")))


class Faults:
    """Counts the steps of one `up` and makes step `at` fail."""

    def __init__(self, at: int, error: type = KernelError):
        self.at, self.error, self.step = at, error, 0

    def tick(self, op, do):
        self.step += 1
        if self.step != self.at:
            return do()
        if self.at % 2 == 0:
            do()
        if self.error is KernelError:
            raise KernelError(f"`{op.ip().splitlines()[0]}` failed: injected fault")
        raise self.error()

    def kernel(self):
        faults = self

        class FaultyKernel(K.Kernel):
            def apply(self, op):
                return faults.tick(op, lambda: K.Kernel.apply(self, op))

        return FaultyKernel()

    def spawn(self, real):
        def spawn(ns, argv, log_path, lab):
            op = plan.Spawn(ns, "?", "?", tuple(argv))
            return self.tick(op, lambda: real(ns, argv, log_path, lab))
        return spawn


def test_the_plan_is_what_up_applies():
    lab = model.load(None, "rl-count")
    assert STEPS == len(plan.build(lab)) > 50


@pytest.mark.parametrize("n", range(1, STEPS + 1))
def test_failure_at_step_n_rolls_back(n, monkeypatch):
    lab = model.load(None, unique_name("rl"))
    ops = plan.build(lab)
    faults = Faults(n)
    monkeypatch.setattr(workloads, "spawn", faults.spawn(workloads.spawn))
    with pytest.raises(KernelError) as raised:
        lifecycle.up(lab, make_kernel=faults.kernel)
    message = raised.value.message
    assert f"up of lab {lab.name} failed at step {n} of {len(ops)}" in message, message
    assert "everything it made was removed" in message
    if not isinstance(ops[n - 1], plan.Spawn):
        assert ops[n - 1].ip().splitlines()[0] in message, message
    assert faults.step == n
    assert leftovers(lab.name) == []


@pytest.mark.parametrize("n", [1, 12, STEPS - 3, STEPS])
def test_ctrl_c_at_step_n_rolls_back(n, monkeypatch):
    lab = model.load(None, unique_name("rl"))
    faults = Faults(n, KeyboardInterrupt)
    monkeypatch.setattr(workloads, "spawn", faults.spawn(workloads.spawn))
    with pytest.raises(KeyboardInterrupt):
        lifecycle.up(lab, make_kernel=faults.kernel)
    assert leftovers(lab.name) == []


def test_up_after_a_failed_up_works(monkeypatch):
    lab = model.load(None, unique_name("rl"))
    faults = Faults(STEPS // 2)
    with pytest.raises(KernelError):
        lifecycle.up(lab, make_kernel=faults.kernel)
    assert leftovers(lab.name) == []
    try:
        result = lifecycle.up(lab)
        assert not result.already_up and result.operations == STEPS
        assert all(K.netns_exists(ns) for ns in lab.namespaces)
    finally:
        lifecycle.down(lab.name)
    assert leftovers(lab.name) == []
