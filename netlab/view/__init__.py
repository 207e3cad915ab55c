"""Looking at a lab: the snapshot of its kernel state, trace of a packet, graph."""
