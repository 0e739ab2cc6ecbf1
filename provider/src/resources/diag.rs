//! Small helpers that turn client errors and validation issues into diagnostics.

use tf_provider::{AttributePath, Diagnostics};

/// Adds an error in the provider's one form: "Unable to <action>", details after.
pub fn unable(diags: &mut Diagnostics, action: &str, detail: impl std::fmt::Display) {
    diags.root_error(format!("Unable to {action}"), detail.to_string());
}

/// Builds an attribute path from names, e.g. `path(&["clone", "0", "storage"])`; numbers are
/// list indexes.
pub fn path(steps: &[&str]) -> AttributePath {
    let mut iter = steps.iter();
    let Some(first) = iter.next() else {
        return AttributePath::root();
    };
    let mut path = AttributePath::new(first.to_string());
    for step in iter {
        path = match step.parse::<i64>() {
            Ok(index) => path.index(index),
            Err(_) => path.attribute(step.to_string()),
        };
    }
    path
}
