"""policy-blocks-dns on a lab without NetworkPolicies: the fault brings the nodes' `table inet
netlab-netpol` itself (the feature's own rendering of its one policy), verify fails exactly the
checks the policy model says, naming the node and the policy, and `--undo` deletes the table, as
the plan has none."""

from __future__ import annotations

from breakit import check_key, failures
from conftest import SCENARIOS, in_ns, lab_fixture, netlab, requires_root
from netlab import exercises as E, model
from netlab.features import FAULTS
from netlab.verify import engine

pytestmark = requires_root

lab = lab_fixture("nd")


def test_policy_blocks_dns_without_policies_brings_the_table_and_undo_deletes_it(lab, tmp_path):
    text = (SCENARIOS / "netpol-dns.yaml").read_text().split("networkPolicies:")[0]
    path = tmp_path / "nopol.yaml"
    path.write_text(text)
    netlab("up", str(path), "--name", lab)
    the_lab = model.load(str(path), lab)
    assert not the_lab.network_policies
    node = f"{lab}-node1"
    assert "netlab-netpol" not in in_ns(node, "nft", "list", "tables").stdout
    want = {check_key(c) for c in E.expected(the_lab, "policy-blocks-dns", "shop",
                                             engine.derive(the_lab))}
    # the DNS pod is no more isolated than any pod here: pings to it are dropped too
    assert {k[0] for k in want} >= {"pod-pod-same-node", "dns-server", "dns-service"}
    broken = FAULTS["policy-blocks-dns"].make(the_lab, "shop")

    netlab("break", lab, "policy-blocks-dns", "--on", "shop")
    assert "table inet netlab-netpol" in in_ns(node, "nft", "list", "tables").stdout
    got = failures(lab)
    assert set(got) == want, (sorted(set(got) - want), sorted(want - set(got)))
    assert all(broken.ns in r and broken.obj in r for r in got.values()), list(got.values())

    netlab("break", lab, "--undo")
    assert "netlab-netpol" not in in_ns(node, "nft", "list", "tables").stdout
    assert not failures(lab)
