//! Client of the Infisical API (Universal Auth, secrets, folders).
