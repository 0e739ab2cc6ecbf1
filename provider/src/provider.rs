//! The provider block: configuration and the clients it builds.
