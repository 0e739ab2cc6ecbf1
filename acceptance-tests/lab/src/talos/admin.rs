//! Admin HTTP API of the fleet (see below).
