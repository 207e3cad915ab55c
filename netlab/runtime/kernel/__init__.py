"""The kernel layer, the only part of netlab that talks to the kernel: netlink (pyroute2, imported
on first use, and netlab's own batched messages), and namespace plumbing.

- netns: named namespaces made in process (as `ip netns add`, without a fork), entered, marked
  as a lab's, removed;
- apply: the Kernel, applying plan operations through one netlink socket per namespace;
- fast: its batched path (interface indexes chosen up front, requests queued);
- observe: what the namespaces hold, as a snapshot for graph and trace;
- host: a node on a real host (`up --node`), the host's own links, routes and sysctls.

Everything else in netlab is pure or goes through this package (`from netlab.runtime import
kernel as K`: the names below).
"""

from .apply import (NUD_PERMANENT, RTNH_F_ONLINK, IPRoute, Kernel, StepFailed,
                    missing_link_kinds)
from .host import (here_delete_link, here_delete_route, here_link_addresses, here_link_exists,
                   here_sysctl)
from .netns import (ETC_NETNS, NETNS_DIR, NetnsExists, enter, enter_like_ip_netns_exec,
                    etc_files, has_etc_files, inside, is_unmounted_file, list_netns, mark,
                    mark_netns, marks, netns_exists, netns_inode, netns_path, remove_netns)
from .observe import observe, route_get

__all__ = ["NUD_PERMANENT", "RTNH_F_ONLINK", "IPRoute", "Kernel", "StepFailed",
           "missing_link_kinds", "here_delete_link", "here_delete_route", "here_link_addresses",
           "here_link_exists", "here_sysctl", "ETC_NETNS", "NETNS_DIR", "NetnsExists", "enter",
           "enter_like_ip_netns_exec", "etc_files", "has_etc_files", "inside",
           "is_unmounted_file", "list_netns", "mark", "mark_netns", "marks", "netns_exists",
           "netns_inode", "netns_path", "remove_netns", "observe", "route_get"]
