"""The /etc/netns files of a lab, on a temporary root: written atomically, recorded in the journal
(`etc <ns>`), removed with the directory only when nothing else is in it."""

from __future__ import annotations

import pytest

from netlab.runtime import etcnetns, kernel, state


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel, "ETC_NETNS", str(tmp_path / "netns"))
    return tmp_path / "netns"


def test_write_and_remove(root):
    path = etcnetns.write("dnw-a-client", "resolv.conf", "nameserver 10.96.0.10\n")
    assert open(path).read() == "nameserver 10.96.0.10\n"
    assert etcnetns.exists("dnw-a-client")
    assert etcnetns.remove("dnw-a-client") and not (root / "dnw-a-client").exists()
    assert not etcnetns.remove("dnw-a-client")      # twice is harmless


def test_a_file_somebody_else_put_there_is_kept(root):
    etcnetns.write("dnw-a-web", "resolv.conf", "x\n")
    (root / "dnw-a-web" / "hosts").write_text("theirs\n")
    etcnetns.remove("dnw-a-web")
    assert (root / "dnw-a-web" / "hosts").read_text() == "theirs\n"
    assert not (root / "dnw-a-web" / "resolv.conf").exists()


@pytest.mark.parametrize("bad", ["", "..", "a/b", "."])
def test_names_that_are_no_namespace_are_refused(root, bad):
    with pytest.raises(ValueError):
        etcnetns.write(bad, "resolv.conf", "x")


def test_only_resolv_conf(root):
    with pytest.raises(ValueError, match="only resolv.conf"):
        etcnetns.write("dnw-a-web", "passwd", "x")


def test_journal_reads_etc_records(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "ROOT", tmp_path)
    st = state.LabState("dnw-j")
    st.begin("s.yaml", "text")
    for line in ("netns dnw-j-node1", "etc dnw-j-node1", "etc dnw-j-client", "etc dnw-j-node1"):
        st.record(line)
    st.close()
    assert st.journal().etc == ["dnw-j-node1", "dnw-j-client"]
