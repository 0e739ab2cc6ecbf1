//! Talos machine configuration generation (pure: no network, no runtime).
