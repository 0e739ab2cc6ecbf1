//! Client of the Talos machine API (gRPC over TLS on port 50000).
