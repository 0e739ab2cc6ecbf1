//! Image Factory schematic ids for a set of system extensions.
//!
//! The Image Factory names a schematic by the SHA-256 (hex) of its canonical YAML. castle writes
//! that YAML the way the factory's Go encoder does: four-space indentation, sequences indented
//! under their key, a trailing newline. Extensions are sorted and de-duplicated first, so the id
//! does not depend on the order the user listed them in. With no extension the schematic is
//! `customization: {}`, the factory's vanilla image.

use sha2::{Digest as _, Sha256};

/// The canonical schematic YAML for these official extensions (e.g. `siderolabs/iscsi-tools`).
pub fn schematic_yaml(extensions: &[String]) -> String {
    let mut exts: Vec<&str> = extensions.iter().map(|e| e.trim()).collect();
    exts.sort_unstable();
    exts.dedup();
    if exts.is_empty() {
        return "customization: {}\n".to_string();
    }
    let mut out =
        String::from("customization:\n    systemExtensions:\n        officialExtensions:\n");
    for ext in exts {
        out.push_str("            - ");
        out.push_str(ext);
        out.push('\n');
    }
    out
}

/// The Image Factory schematic id (lowercase hex SHA-256 of [`schematic_yaml`]).
pub fn schematic_id(extensions: &[String]) -> String {
    let digest = Sha256::digest(schematic_yaml(extensions).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longhorn_extensions_give_the_well_known_factory_id() {
        let exts = [
            "siderolabs/util-linux-tools".to_string(),
            "siderolabs/iscsi-tools".into(),
        ];
        assert_eq!(
            schematic_id(&exts),
            "613e1592b2da41ae5e265e8789429f22e121aab91cb4deb6bc3c0b6262961245"
        );
    }

    #[test]
    fn no_extension_is_the_vanilla_schematic() {
        assert_eq!(
            schematic_id(&[]),
            "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
        );
    }
}
