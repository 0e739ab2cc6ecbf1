//! Types generated from `proto/` by prost and tonic.
