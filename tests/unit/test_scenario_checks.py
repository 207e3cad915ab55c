"""The scenario's `checks:`: parsed into the Lab, bad ones refused with file, line and fix."""

from __future__ import annotations

import pytest

from netlab import model
from netlab.core.errors import ScenarioError

BASE = model.DEFAULT_SCENARIO.read_text()
FIRST = BASE.count("\n") + 2          # the line of the first item under `checks:`


def parse_checks(*items: str) -> model.Lab:
    return model.parse(BASE + "checks:\n" + "".join(f"  - {i}\n" for i in items), "s.yaml")


def test_checks_are_carried_into_the_lab_with_their_lines():
    lab = parse_checks("{from: web, to: api, port: 8080, nat: false}",
                       "{name: no internet, from: node1, to: 203.0.113.1, expect: unreachable}",
                       "{from: db, to: 10.244.2.3, port: 8080}")
    a, b, c = lab.checks
    assert (a.src, a.dst, a.dst_ip, a.port, a.expect, a.nat, a.line) == (
        "web", "api", "10.244.2.2", 8080, "reachable", False, FIRST)
    assert (b.name, b.dst, b.port, b.expect, b.line) == ("no internet", "203.0.113.1", None,
                                                         "unreachable", FIRST + 1)
    assert (c.dst, c.name) == ("worker", "db -> 10.244.2.3:8080")   # an address of the lab


def test_a_scenario_without_checks_has_none():
    assert model.parse(BASE, "s.yaml").checks == ()


@pytest.mark.parametrize("item, message", [
    ("{from: wbe, to: api}", "check #1: from: unknown pod or node 'wbe': did you mean 'web'?"),
    ("{from: web, to: apii}", "check #1: to: unknown pod or node 'apii': did you mean 'api'?"),
    ("{from: web, to: 300.1.1.1}", "to: unknown pod or node '300.1.1.1'"),
    ("{from: web, to: api, port: 70000}", "port: Input should be less than or equal to 65535"),
    ("{from: web, to: api, port: http}", "port: input should be a valid integer"),
    ("{from: web, to: api, port: 9090}",
     "nothing in 'api' listens on port 9090 (its ports: 8080): use one of them or expect unreachable"),
    ("{from: web, to: node2, port: 22}", "nothing in 'node2' listens on port 22 (its ports: 8000)"),
    ("{from: web, to: api, nat: false}", "nat needs a `port:`"),
    ("{from: web, to: api, port: 8080, nat: true, expect: unreachable}",
     "nat says what a server sees, but the check expects unreachable"),
    ("{from: web, to: 203.0.113.1, port: 80, nat: false}", "nat needs netlab's server at 203.0.113.1:80"),
    ("{from: web, to: api, expect: maybe}", "expect: 'maybe' is not allowed here"),
    ("{from: web, to: api, prot: 8080}", "unknown field 'prot': did you mean 'port'?"),
    ("{to: api}", "check #1: field 'from' is required"),
    ("{name: db-down, form: web, to: api}", "check 'db-down': unknown field 'form': did you mean 'from'?"),
])
def test_bad_checks_name_the_line_and_the_fix(item, message):
    with pytest.raises(ScenarioError) as e:
        parse_checks(item)
    assert e.value.line == FIRST and e.value.code == 2
    assert message in e.value.message, e.value.message


def test_the_error_points_at_the_bad_check_not_the_first():
    with pytest.raises(ScenarioError) as e:
        parse_checks("{from: web, to: api}", "{from: web, to: nowhere}")
    assert e.value.line == FIRST + 1 and "check #2" in e.value.message
