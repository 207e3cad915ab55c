"""The neighbours feature, pure: the estimate, the choice, the permanent entries it plans."""

import socket
import struct

from bench.gen import scenario
from netlab import model, plan
from netlab.core.ops import LinkAddress, NeighPermanent
from netlab.features import neighbours as N
from netlab.runtime import nlmsg


def lab(nodes, pods, extra=""):
    text = scenario(nodes, pods, name="scl-u")
    if extra:
        text = text.replace("  backend: host-gw", "  backend: host-gw\n" + extra)
    return model.parse(text, "<test>")


def test_estimate_counts_pods_squared_and_nodes():
    lab10 = lab(10, 10)
    assert lab10.neighbours.estimate == 10 * (10 * 10 + 10) + 10 * 9


def test_choice_by_half_of_gc_thresh3():
    assert not N.choose("auto", 512, 1024)
    assert N.choose("auto", 513, 1024)
    assert N.choose("always", 1, 1024)
    assert not N.choose("never", 10 ** 6, 1024)


def test_small_lab_keeps_arp_and_plan_unchanged():
    small = lab(3, 2)
    assert not small.neighbours.static
    assert not [op for op in plan.build(small) if isinstance(op, (NeighPermanent, LinkAddress))]


def test_always_plans_an_entry_per_on_link_neighbour():
    small = lab(2, 3, "  staticNeighbours: always")
    ops = plan.build(small)
    neigh = [(op.ns, e) for op in ops if isinstance(op, NeighPermanent) for e in op.entries]
    assert len(neigh) == small.neighbours.entries == small.neighbours.estimate
    p = small.pods[0]
    node = small.node(p.node)
    mine = {(a, m) for ns, (_, a, m) in neigh if ns == p.ns}
    assert (node.gateway, N.mac_of(node.gateway)) in mine
    assert {q.ip for q in small.pods_on(p.node) if q is not p} <= {a for a, _ in mine}
    assert LinkAddress(p.ns, "eth0", N.mac_of(p.ip)) in ops
    # every MAC an entry names is given to a link before the entries
    macs = {op.mac for op in ops if isinstance(op, LinkAddress)}
    assert {m for _, (_, _, m) in neigh} <= macs
    one = next(op for op in ops if isinstance(op, NeighPermanent) and op.ns == p.ns)
    assert one.ip().startswith(f"ip -n {p.ns} -batch - <<'EOF'\nneigh replace ") and \
        "nud permanent" in one.ip()


def test_table_fulls_sums_every_cpu(tmp_path):
    f = tmp_path / "arp_cache"
    f.write_text("entries  allocs table_fulls\n0000000a 00000001 0000000f\n0000000a 00000002 00000001\n")
    assert N.table_fulls(str(f)) == 16
    assert N.table_fulls(str(tmp_path / "none")) is None


def test_neigh_message_is_what_ip_sends():
    msg = nlmsg.neigh_add(7, 3, "10.0.0.2", "0a:58:0a:00:00:02")
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, kind, seq) == (len(msg), 28, 7)
    family, _, _, index, state, _, _ = struct.unpack_from("=BBHiHBB", msg, 16)
    assert (family, index, state) == (socket.AF_INET, 3, 0x80)
    assert socket.inet_aton("10.0.0.2") in msg and bytes.fromhex("0a580a000002") in msg


def test_summary_says_how_to_see_arp():
    big = N.NeighbourPlan("auto", 1190, 1024, True, 1190)
    assert "staticNeighbours: never" in big.summary() and "gc_thresh3" in big.summary()
    assert N.NeighbourPlan("auto", 10, 1024, False).summary() == ""
