//! Finding castle's checkout (it holds fakepve's launcher) and the Python that runs it.

use std::path::{Path, PathBuf};

/// The checkout: the first directory holding `acceptance-tests/`, walking up from the current
/// directory, else from the binary (`target/debug/castle-lab` lives inside the checkout).
pub fn root() -> Option<PathBuf> {
    let from_cwd = std::env::current_dir().ok().and_then(|d| holding_tests(&d));
    from_cwd.or_else(|| {
        let exe = std::env::current_exe().ok()?;
        holding_tests(exe.parent()?)
    })
}

fn holding_tests(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join("acceptance-tests").is_dir())
        .map(Path::to_path_buf)
}

/// The Python to run fakepve with: `$CASTLE_LAB_PYTHON`, else the checkout's `.venv` (where
/// `make` installs fakepve), else `python3` from the `PATH`.
pub fn python(root: &Path) -> PathBuf {
    python_from(
        std::env::var_os("CASTLE_LAB_PYTHON").map(PathBuf::from),
        root,
    )
}

fn python_from(env: Option<PathBuf>, root: &Path) -> PathBuf {
    if let Some(p) = env.filter(|p| !p.as_os_str().is_empty()) {
        return p;
    }
    let venv = root.join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    "python3".into()
}

/// fakepve's launcher in the checkout.
pub fn pve_serve(root: &Path) -> PathBuf {
    root.join("acceptance-tests/harness/pve_serve.py")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_then_the_venv_then_python3() {
        let dir = std::env::temp_dir().join(format!("castle-lab-repo-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".venv/bin")).unwrap();
        assert_eq!(python_from(None, &dir), PathBuf::from("python3"));
        std::fs::write(dir.join(".venv/bin/python"), "").unwrap();
        assert_eq!(python_from(None, &dir), dir.join(".venv/bin/python"));
        assert_eq!(
            python_from(Some("/opt/py".into()), &dir),
            PathBuf::from("/opt/py")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_root_is_the_directory_holding_the_acceptance_tests() {
        let dir = std::env::temp_dir().join(format!("castle-lab-root-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("acceptance-tests/lab/src")).unwrap();
        assert_eq!(
            holding_tests(&dir.join("acceptance-tests/lab/src")),
            Some(dir.clone())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
