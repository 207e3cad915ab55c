#!/bin/sh
# netlab's one set-up step, for a fresh Debian 12 or Ubuntu machine (run as root). Used by the
# README, by CI and by the Vagrantfile, so they cannot drift apart.
#   sudo ./setup.sh          tools from Debian, netlab and its test tools in /opt/netlab,
#                            and the `netlab` command in /usr/local/bin
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${NETLAB_VENV:-/opt/netlab}

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh installs system packages: run it as root (sudo ./setup.sh)" >&2
  exit 2
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The tools that run inside the lab's namespaces, and what netlab needs to run.
apt-get install -y -qq --no-install-recommends \
  iproute2 iputils-ping fping curl socat nftables tcpdump util-linux procps sudo graphviz \
  conntrack dnsmasq-base nginx bind9-dnsutils containernetworking-plugins iptables kmod \
  python3 python3-venv python3-pip ca-certificates >/dev/null

# Debian's own Python, just installed: not whatever `python3` comes first on root's PATH (a
# pyenv under /root would make /opt/netlab unusable for every other user).
/usr/bin/python3 -m venv "$venv"
log=$(mktemp)
if ! "$venv/bin/pip" install -e "$here[test]" >"$log" 2>&1; then
  tail -30 "$log" >&2
  echo "setup.sh: pip install failed (full log: $log)" >&2
  exit 1
fi
rm -f "$log"
# Debian's nginx package starts a server on the host where systemd runs; netlab only ever runs
# nginx inside a lab's namespaces, so the host's own service is switched off.
if command -v systemctl >/dev/null && systemctl is-enabled nginx >/dev/null 2>&1; then
  systemctl disable --now nginx >/dev/null 2>&1 || true
fi
# Services: bridged pod traffic must pass netfilter (a pod calling a Service whose endpoint is on
# its own node), which needs br_netfilter. On stock Debian it is a module that is not loaded: load
# it now and at every boot, as Kubernetes' install guide does. This is a documented host change:
# it only makes the per-namespace switch /proc/sys/net/bridge/bridge-nf-call-iptables exist;
# netlab sets it inside the lab's node namespaces, never in the root one.
if [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
  modprobe br_netfilter || echo "setup.sh: modprobe br_netfilter failed: Services need it" >&2
fi
if [ -d /lib/modules/"$(uname -r)" ] && modinfo br_netfilter >/dev/null 2>&1; then
  echo br_netfilter > /etc/modules-load.d/netlab-br_netfilter.conf
fi
ln -sf "$venv/bin/netlab" /usr/local/bin/netlab
# The CNI plugin, for a learner to run by hand (`ip netns exec <node> netlab-cni`); netlab itself
# finds it next to the venv's python (CNI_PATH /usr/lib/cni:$venv/bin).
ln -sf "$venv/bin/netlab-cni" /usr/local/bin/netlab-cni
echo "netlab installed: $(command -v netlab) ($("$venv/bin/python" -c 'import netlab; print(netlab.__version__)'))"
