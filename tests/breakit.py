"""What the break-it tests share: one fault's whole test on a real lab, verify's failures that hold
across runs, the keys that compare them with the model's checks, a fault's fix typed by hand, and
the seed that gives a fault."""

from __future__ import annotations

import subprocess

from conftest import SCENARIOS, netlab, verify_json
from netlab import exercises as E, model
from netlab.features import FAULTS
from netlab.verify import engine


def result_key(r: dict) -> tuple:
    """A verify --json result, as check_key says a derived check."""
    return (r["rule"], r["from"], r["to"], r["method"], r["target"], r.get("name", ""))


def check_key(c) -> tuple:
    target = c.url if c.method == "http" else c.target
    return (c.rule, c.src, c.dst, c.method, target, c.label)


def failures(lab: str, runs: int = 3) -> dict:
    """verify's failures (key -> reason) that repeat in every run that had failures: a fault fails
    its checks every time, while a probe may time out once on a machine loaded by parallel
    tests."""
    _, data = verify_json(lab)
    got = {result_key(r): r["reason"] for r in data["results"] if not r["ok"]}
    for _ in range(runs - 1):
        if not got:
            break
        _, again = verify_json(lab)
        again_keys = {result_key(r) for r in again["results"] if not r["ok"]}
        if again_keys == set(got):
            break
        got = {k: v for k, v in got.items() if k in again_keys}
    return got


def by_hand(cmd: str) -> None:
    """A command as a learner types it (a fault's Broken.fix)."""
    subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, timeout=20)


def seed_for(the_lab, fault: str) -> tuple[int, str]:
    """The first seed whose exercise is this fault on this lab (and its target)."""
    for seed in range(1, 10_000):
        got, target = E.choose(the_lab, seed)
        if got == fault:
            return seed, target
    raise AssertionError(f"no seed gives {fault}")


def until_ok(*args: str, tries: int = 3):
    """A netlab command that must succeed; on a machine loaded by parallel tests one probe of the
    verify it runs may time out, so it is asked again (a real fault fails every time)."""
    for _ in range(tries - 1):
        proc = netlab(*args, check=False)
        if proc.returncode == 0:
            return proc
    return netlab(*args)


def break_fix_undo(lab: str, scenario: str, fault: str, target: str) -> set:
    """Up the scenario as `lab`, break it with `fault` on `target` ("": its first): verify must
    fail every check the model says it breaks and none but those it may break, each reason naming
    the namespace and object changed; the fault's fix typed by hand repairs it, and `--undo` too.
    Returns the keys of the checks it may break."""
    path = str(SCENARIOS / f"{scenario}.yaml")
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
    return may
