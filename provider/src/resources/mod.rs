//! Terraform resources: schema, plan and the mapping of state to client calls.
