//! The `timeouts { create, update, delete }` block every resource takes.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, NestedBlock,
};
use tf_provider::value::Value;
use tf_provider::{map, AttributePath, Diagnostics};

/// The block as it sits in state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeoutsBlock {
    /// Create timeout, e.g. `20m`.
    pub create: Value<String>,
    /// Update timeout.
    pub update: Value<String>,
    /// Delete timeout.
    pub delete: Value<String>,
}

/// Which operation a timeout is for.
#[derive(Debug, Clone, Copy)]
pub enum Operation {
    /// Create.
    Create,
    /// Update.
    Update,
    /// Delete.
    Delete,
}

/// The schema of the block, documenting each default.
pub fn schema(create: &str, update: &str, delete: &str) -> NestedBlock {
    let attr = |what: &str, default: &str| {
        Attribute {
        attr_type: AttributeType::String,
        description: Description::plain(format!(
            "How long {what} may take, as a duration like \"30s\", \"10m\" or \"1h30m\" (default {default})."
        )),
        constraint: AttributeConstraint::Optional,
        ..Default::default()
    }
    };
    NestedBlock::Optional(Block {
        description: Description::plain("Time limits for each operation."),
        attributes: map! {
            "create" => attr("creating", create),
            "update" => attr("updating", update),
            "delete" => attr("deleting", delete)
        },
        ..Default::default()
    })
}

/// Parses a Go-style duration (`90s`, `10m`, `1h30m`, `500ms`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration like \"30s\", \"10m\" or \"1h30m\""
            ));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| {
            format!("{text:?} is not a duration like \"30s\", \"10m\" or \"1h30m\"")
        })?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            _ => {
                return Err(format!(
                    "{text:?} has no unit or an unknown one: use ms, s, m or h"
                ))
            }
        };
        total += Duration::from_secs_f64(seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

impl TimeoutsBlock {
    /// The timeout for an operation, or its default.
    pub fn get(&self, operation: Operation, default: Duration) -> Duration {
        let value = match operation {
            Operation::Create => &self.create,
            Operation::Update => &self.update,
            Operation::Delete => &self.delete,
        };
        match value {
            Value::Value(text) => parse_duration(text).unwrap_or(default),
            _ => default,
        }
    }

    /// Reports each unparsable duration against its attribute.
    pub fn validate(&self, diags: &mut Diagnostics) {
        for (name, value) in [
            ("create", &self.create),
            ("update", &self.update),
            ("delete", &self.delete),
        ] {
            if let Value::Value(text) = value {
                if let Err(message) = parse_duration(text) {
                    diags.error(
                        "Invalid timeout",
                        message,
                        AttributePath::new("timeouts").index(0).attribute(name),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten minutes").is_err());
    }
}
