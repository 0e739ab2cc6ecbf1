//! Building schema attributes, the same way for every resource.

use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Description};

/// An attribute with a Markdown description.
pub fn attr(
    attr_type: AttributeType,
    constraint: AttributeConstraint,
    description: &str,
) -> Attribute {
    Attribute {
        attr_type,
        description: Description::markdown(description),
        constraint,
        ..Default::default()
    }
}

/// The same attribute, marked sensitive: Terraform hides it in plans and output.
pub fn sensitive(attribute: Attribute) -> Attribute {
    Attribute {
        sensitive: true,
        ..attribute
    }
}
