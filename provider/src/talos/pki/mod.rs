//! The Talos secrets bundle and certificates (pure: no network, no runtime).
