//! The Infisical emulator: Universal Auth, secrets and folders over HTTP.
