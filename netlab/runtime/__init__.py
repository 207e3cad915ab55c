"""What touches the running system: the kernel (netlink), processes, state, locks, preflight."""
