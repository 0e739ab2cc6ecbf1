//! The optional `kubeconfig_file`: the admin kubeconfig written to disk with mode 0600 after
//! every create, update or renewal, and removed on destroy, so nobody copies it around by hand.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `contents` to `path`, readable by its owner only (an existing file is narrowed to
/// 0600 too). The directory must exist.
pub fn write(path: &str, contents: &str) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {path}: {e}"))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {path} to mode 0600: {e}"))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("cannot write {path}: {e}"))
}

/// True when `path` holds exactly `contents` with mode 0600.
pub fn is_current(path: &str, contents: &str) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    meta.permissions().mode() & 0o777 == 0o600
        && std::fs::read_to_string(path).is_ok_and(|text| text == contents)
}

/// Removes the file; one already gone is fine.
pub fn remove(path: &str) -> Result<(), String> {
    match std::fs::remove_file(Path::new(path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {path}: {e}"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_file_is_private_and_rewritten_when_it_drifts() {
        let dir = std::env::temp_dir().join(format!("castle-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        let path = path.to_str().unwrap();
        std::fs::write(path, "old").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!is_current(path, "new"));
        write(path, "new").unwrap();
        assert_eq!(
            std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(is_current(path, "new"));
        remove(path).unwrap();
        remove(path).unwrap();
        assert!(!is_current(path, "new"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
