//! Emulated Talos nodes: the machine API on port 50000 of each node address.
