"""Unit tests of the cluster DNS record model and the files written from it (pure, no root)."""

from pathlib import Path

import pytest

from netlab.features.dns.model import (
    DnsmasqFiles, Endpoint, Pod, Port, Record, Service, corefile, dns_service_ip, dnsmasq_argv,
    dnsmasq_conf, kube_dns_service,
    namespaces_of, node_resolv_conf, records, remove_netns_resolv, resolv_conf, resolv_conf_for,
    reverse_name, reverse_zones, write_netns_resolv,
)

WEB = Service("web", "shop", cluster_ip="10.96.0.20",
              ports=[Port(80, "http"), Port(8443, ""), Port(53, "dns", "UDP")])
DB = Service("db", "shop", ports=[Port(5432, "pg")],
             endpoints=[Endpoint("10.244.1.5", pod="db-0"), Endpoint("10.244.2.6"),
                        Endpoint("10.244.2.7", ready=False)])
EXT = Service("ext", "shop", type="ExternalName", external_name="www.example.com.")
PODS = [Pod("db-0", "shop", "10.244.1.5", hostname="db-0", subdomain="db"),
        Pod("client", "default", "10.244.1.9")]


def lines(recs):
    return {r.zone_line() for r in recs}


def test_clusterip_service_a_srv_ptr():
    got = lines(records([WEB]))
    assert "web.shop.svc.cluster.local. 30 IN A 10.96.0.20" in got
    assert ("_http._tcp.web.shop.svc.cluster.local. 30 IN SRV 0 100 80 "
            "web.shop.svc.cluster.local.") in got
    assert ("_dns._udp.web.shop.svc.cluster.local. 30 IN SRV 0 100 53 "
            "web.shop.svc.cluster.local.") in got
    assert "20.0.96.10.in-addr.arpa. 30 IN PTR web.shop.svc.cluster.local." in got
    # the unnamed port has no SRV record
    assert not any(" 8443 " in line for line in got)


def test_headless_one_a_per_ready_endpoint_and_hostnames():
    recs = records([DB], PODS)
    svc_a = sorted(r.value for r in recs if r.type == "A" and r.name == "db.shop.svc.cluster.local")
    assert svc_a == ["10.244.1.5", "10.244.2.6"]  # not the unready one
    got = lines(recs)
    # pod hostname + subdomain naming the Service; else the dashed IP, as CoreDNS
    assert "db-0.db.shop.svc.cluster.local. 30 IN A 10.244.1.5" in got
    assert "10-244-2-6.db.shop.svc.cluster.local. 30 IN A 10.244.2.6" in got
    assert "5.1.244.10.in-addr.arpa. 30 IN PTR db-0.db.shop.svc.cluster.local." in got
    srv = sorted(r.value for r in recs if r.type == "SRV")
    assert srv == ["10-244-2-6.db.shop.svc.cluster.local", "db-0.db.shop.svc.cluster.local"]
    assert {r.port for r in recs if r.type == "SRV"} == {5432}


def test_headless_publish_not_ready_and_no_endpoints():
    svc = Service("db", "shop", endpoints=[Endpoint("10.244.2.7", ready=False)],
                  publish_not_ready=True)
    assert [r.value for r in records([svc]) if r.name == "db.shop.svc.cluster.local"] == [
        "10.244.2.7"]
    empty = Service("db", "shop", endpoints=[Endpoint("10.244.2.7", ready=False)])
    assert not [r for r in records([empty]) if "db.shop" in r.name]


def test_endpoint_hostname_field_wins_and_pod_subdomain_must_match():
    svc = Service("other", "shop", endpoints=[Endpoint("10.244.1.5", pod="db-0")])
    names = {r.name for r in records([svc], PODS) if r.type == "A"}
    assert "10-244-1-5.other.shop.svc.cluster.local" in names  # subdomain is db, not other
    svc = Service("db", "shop", endpoints=[Endpoint("10.244.1.5", hostname="Pet", pod="db-0")])
    assert "pet.db.shop.svc.cluster.local" in {r.name for r in records([svc], PODS)}


def test_externalname_cname_and_version_and_pods():
    got = lines(records([EXT], PODS))
    assert "ext.shop.svc.cluster.local. 30 IN CNAME www.example.com." in got
    assert 'dns-version.cluster.local. 30 IN TXT "1.1.0"' in got
    assert "10-244-1-9.default.pod.cluster.local. 30 IN A 10.244.1.9" in got
    assert "9.1.244.10.in-addr.arpa. 30 IN PTR 10-244-1-9.default.pod.cluster.local." in got
    assert not any(r.type in ("A", "PTR") and r.name.startswith("ext.") for r in records([EXT]))


def test_one_ptr_per_address_first_claim_wins():
    recs = records([DB], PODS)
    ptrs = [r for r in recs if r.type == "PTR" and r.name == reverse_name("10.244.1.5")]
    assert [p.value for p in ptrs] == ["db-0.db.shop.svc.cluster.local"]


def test_other_domain_and_case():
    recs = records([Service("Web", "Shop", cluster_ip="10.96.0.20")], domain="lab.test")
    assert Record("web.shop.svc.lab.test", "A", "10.96.0.20") in recs
    assert Record("dns-version.lab.test", "TXT", "1.1.0") in recs


def test_reverse_zones():
    assert reverse_zones("10.244.0.0/16") == ["244.10.in-addr.arpa"]
    assert reverse_zones("10.244.1.0/24") == ["1.244.10.in-addr.arpa"]
    z = reverse_zones("10.96.0.0/12")
    assert len(z) == 16 and z[0] == "96.10.in-addr.arpa" and z[-1] == "111.10.in-addr.arpa"


def conf_lines(**kw):
    files = DnsmasqFiles(Path("/state/lab"))
    recs = records([WEB, DB, EXT], PODS)
    args = dict(pod_cidrs=["10.244.0.0/16"])
    args.update(kw)
    return dnsmasq_conf(recs, "10.244.0.10", files, **args).splitlines()


def test_dnsmasq_conf_static_and_local():
    c = conf_lines()
    for want in ["no-resolv", "no-hosts", "bind-interfaces", "listen-address=10.244.0.10",
                 "port=53", "pid-file=/state/lab/dnsmasq.pid",
                 "log-facility=/state/lab/dnsmasq.log", "local=/cluster.local/",
                 "local=/244.10.in-addr.arpa/", "local=/96.10.in-addr.arpa/", "local=/#/"]:
        assert want in c
    assert not any(line.startswith(("dhcp", "server=")) for line in c)
    assert "log-queries" not in c and "log-queries" in conf_lines(log_queries=True)


def test_dnsmasq_conf_records():
    c = conf_lines()
    assert "host-record=web.shop.svc.cluster.local,10.96.0.20" in c
    assert ("srv-host=_http._tcp.web.shop.svc.cluster.local,web.shop.svc.cluster.local,80,0,100"
            in c)
    assert "cname=ext.shop.svc.cluster.local,www.example.com" in c
    assert 'txt-record=dns-version.cluster.local,"1.1.0"' in c
    assert "synth-domain=shop.pod.cluster.local,10.244.0.0/16" in c
    assert "synth-domain=default.pod.cluster.local,10.244.0.0/16" in c
    # pods come from synth-domain; their PTR names their own namespace explicitly
    assert not any(line.startswith("host-record=10-244-1-9.default.pod") for line in c)
    assert "ptr-record=9.1.244.10.in-addr.arpa,10-244-1-9.default.pod.cluster.local" in c
    # the first host-record of an address gives its PTR: the endpoint's own name comes first
    first = c.index("host-record=db-0.db.shop.svc.cluster.local,10.244.1.5")
    assert first < c.index("host-record=db.shop.svc.cluster.local,10.244.1.5")


def test_dnsmasq_conf_without_synth_and_with_upstream():
    c = conf_lines(pod_cidrs=[], upstreams=["198.51.100.53"])
    assert "host-record=10-244-1-9.default.pod.cluster.local,10.244.1.9" in c
    assert not any(line.startswith(("synth-domain", "ptr-record")) for line in c)
    assert "server=198.51.100.53" in c and "local=/#/" not in c


def test_dnsmasq_argv():
    files = DnsmasqFiles("/state/lab/dns")
    assert dnsmasq_argv(files) == ["/usr/sbin/dnsmasq", "--conf-file=/state/lab/dns/dnsmasq.conf",
                                   "--keep-in-foreground"]


def test_corefile_is_kubeadms():
    c = corefile()
    assert c.splitlines()[1] == ".:53 {"
    body = " ".join(c.split("\n", 1)[1].split())
    assert body == (".:53 { errors health { lameduck 5s } ready kubernetes cluster.local "
                    "in-addr.arpa ip6.arpa { pods insecure fallthrough in-addr.arpa ip6.arpa "
                    "ttl 30 } prometheus :9153 forward . /etc/resolv.conf { max_concurrent 1000 }"
                    " cache 30 loop reload loadbalance }")


def test_resolv_confs():
    assert resolv_conf("shop") == ("search shop.svc.cluster.local svc.cluster.local "
                                   "cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n")
    assert node_resolv_conf() == ("search svc.cluster.local cluster.local\n"
                                  "nameserver 10.96.0.10\noptions ndots:2\n")
    assert resolv_conf_for("shop", "Default") == node_resolv_conf()
    assert resolv_conf_for("shop", "ClusterFirst", host_network=True) == node_resolv_conf()
    assert resolv_conf_for("shop", "ClusterFirstWithHostNet", host_network=True) == \
        resolv_conf("shop")


def test_netns_resolv_write_remove(tmp_path):
    p = write_netns_resolv("tdns-x", "nameserver 10.96.0.10\n", root=tmp_path)
    assert p == tmp_path / "tdns-x" / "resolv.conf" and p.read_text() == "nameserver 10.96.0.10\n"
    remove_netns_resolv("tdns-x", root=tmp_path)
    assert not (tmp_path / "tdns-x").exists()
    remove_netns_resolv("tdns-x", root=tmp_path)  # twice is harmless
    write_netns_resolv("tdns-y", "x", root=tmp_path)
    (tmp_path / "tdns-y" / "hosts").write_text("keep")
    remove_netns_resolv("tdns-y", root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "tdns-y").iterdir()) == ["hosts"]
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            write_netns_resolv(bad, "x", root=tmp_path)


def test_kube_dns_service_and_ip():
    assert dns_service_ip() == "10.96.0.10"
    assert dns_service_ip("10.100.0.0/16") == "10.100.0.10"
    svc = kube_dns_service("10.96.0.10", [Endpoint("10.244.0.10", pod="coredns")])
    got = lines(records([svc]))
    assert "kube-dns.kube-system.svc.cluster.local. 30 IN A 10.96.0.10" in got
    for port in ("_dns._udp", "_dns-tcp._tcp", "_metrics._tcp"):
        assert any(line.startswith(f"{port}.kube-dns.kube-system.") for line in got)


@pytest.mark.parametrize("bad", [
    Service("web", "shop", cluster_ip="10.96.0.20", ports=[Port(80, "a,b")]),
    Service("we\nb", "shop", cluster_ip="10.96.0.20"),
    Service("ext", "shop", type="ExternalName", external_name="x,server=1.2.3.4"),
    Service("web", "shop", cluster_ip="10.96.0.2x"),
    Service("db", "shop", endpoints=[Endpoint("10.244.1.5", hostname="-bad")]),
])
def test_dnsmasq_conf_refuses_what_dnsmasq_would_misread(bad):
    with pytest.raises(ValueError):
        dnsmasq_conf(records([bad]), "10.244.0.10", DnsmasqFiles("/s"))


def test_dnsmasq_conf_refuses_bad_namespace_and_addresses():
    recs = records([WEB])
    with pytest.raises(ValueError):
        dnsmasq_conf(recs, "10.244.0.10", DnsmasqFiles("/s"), namespaces=["a\nlog-queries"])
    with pytest.raises(ValueError):
        dnsmasq_conf(recs, "not-an-ip", DnsmasqFiles("/s"))
    with pytest.raises(ValueError):
        dnsmasq_conf(recs, "10.244.0.10", DnsmasqFiles("/s"), pod_cidrs=["10.244.0.1/16"])


def test_pod_domains_and_pods_outside_the_range():
    host_pod = Pod("agent", "monitoring", "192.168.1.11")  # e.g. a hostNetwork pod: a node IP
    recs = records([WEB], [*PODS, host_pod])
    c = dnsmasq_conf(recs, "10.244.0.10", DnsmasqFiles("/s"), pod_cidrs=["10.244.0.0/16"],
                     namespaces=["empty"]).splitlines()
    synth = sorted(line.split("=")[1].split(".")[0] for line in c if line.startswith("synth"))
    assert synth == ["default", "empty", "monitoring", "shop"]
    # synth-domain cannot answer it: an explicit record, whose host-record also gives the PTR
    assert "host-record=192-168-1-11.monitoring.pod.cluster.local,192.168.1.11" in c
    assert not any(line.startswith("ptr-record=11.1.168.192") for line in c)
    assert namespaces_of([WEB], PODS) == ["default", "shop"]
