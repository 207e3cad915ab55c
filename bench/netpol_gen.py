"""The scenario bench/netpol.py brings up: P pods over N nodes and namespaces ns0..ns9 with
netpol_bench's labels and named ports, and its policy mix (as a scenario writes them)."""

from __future__ import annotations

from netpol_bench import policy_items


def scenario(name: str, pods: int, policies: int, nodes: int) -> dict:
    servers = [{"name": "s", "image": "netexec", "port": 80,
                "ports": [{"containerPort": 80, "name": "web"},
                          {"containerPort": 53, "name": "dns", "protocol": "UDP"}]}]
    return {
        "name": name,
        "network": {"underlay": "192.168.1.0/24", "podCIDR": "10.244.0.0/16"},
        "nodes": [{"name": f"node{n + 1}", "ip": f"192.168.1.{n + 11}"} for n in range(nodes)],
        "namespaces": [{"name": f"ns{i}", "labels": {"team": "red" if i % 2 else "blue"}}
                       for i in range(10)],
        "pods": [{"name": f"p{i}", "namespace": f"ns{i % 10}", "node": f"node{i % nodes + 1}",
                  "labels": {"app": f"app{i % 7}", "tier": f"t{i % 3}"}, "containers": servers}
                 for i in range(pods)],
        "networkPolicies": policy_items(policies),
    }
