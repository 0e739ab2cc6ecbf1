//! The emulated Kubernetes API server behind the VIP (port 6443).
