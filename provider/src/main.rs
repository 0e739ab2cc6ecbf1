//! The provider plugin binary that Terraform starts.

fn main() {}
