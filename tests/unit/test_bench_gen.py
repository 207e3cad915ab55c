"""bench/gen.py writes scenarios netlab accepts, with the pods asked for."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

from netlab import model, plan

sys.path.insert(0, str(ROOT / "bench"))
import gen  # noqa: E402


def test_generated_scenario_has_n_nodes_and_m_pods_each():
    lab = model.parse(gen.scenario(4, 30), "gen.yaml", "sp-gen")
    assert [n.name for n in lab.nodes] == ["n1", "n2", "n3", "n4"]
    assert len(lab.pods) == 120 and all(len(lab.pods_on(n.name)) == 30 for n in lab.nodes)
    assert all(not p.containers for p in lab.pods)
    assert len(set(p.ip for p in lab.pods)) == 120
    assert sum(isinstance(op, plan.VethAdd) for op in plan.build(lab)) == 124


def test_netexec_gives_each_pod_a_server():
    lab = model.parse(gen.scenario(2, 2, netexec=True), "gen.yaml", "sp-gen")
    assert [(c.name, c.image, c.port) for p in lab.pods for c in p.containers] == \
        [("server", "netexec", 8080)] * 4


def test_more_pods_than_a_node_subnet_holds_is_refused():
    with pytest.raises(ValueError, match="0 to 253"):
        gen.scenario(1, 254)
    assert len(model.parse(gen.scenario(1, 253), "gen.yaml", "sp-gen").pods) == 253
