//! The license Secret's files, put where the image's entrypoint installs them from.

use std::path::{Path, PathBuf};

use super::{ConfigFileError, create_dir, write_file};

/// Copies the license Secret's files: `js7-license.jar` to
/// `<resources>/lib/js7-license.jar`, every other key to
/// `<resources>/license/<key>`. A Secret volume also holds `..data` and
/// timestamped folders; only the keys (names without a leading dot) count.
pub(super) fn install_license(
    license_dir: &Path,
    resources: &Path,
) -> Result<Vec<String>, ConfigFileError> {
    let problem = |problem: String| ConfigFileError::License {
        dir: license_dir.display().to_string(),
        problem,
    };
    let entries =
        std::fs::read_dir(license_dir).map_err(|e| problem(format!("cannot be read: {e}")))?;
    let mut keys: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| problem(format!("cannot be read: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        keys.push(entry.path());
    }
    keys.sort();
    let is_jar = |p: &Path| p.file_name().is_some_and(|n| n == "js7-license.jar");
    if !keys.iter().any(|p| is_jar(p)) {
        return Err(problem("has no key js7-license.jar".to_owned()));
    }
    if keys.iter().all(|p| is_jar(p)) {
        return Err(problem(
            "has no license key file besides js7-license.jar".to_owned(),
        ));
    }
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ConfigFileError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let mut written = Vec::new();
    for key in keys {
        let name = key
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let target = if is_jar(&key) {
            resources.join("lib").join(&name)
        } else {
            resources.join("license").join(&name)
        };
        if let Some(parent) = target.parent() {
            create_dir(parent)?;
        }
        write_file(&target, &read(&key)?, 0o644)?;
        written.push(target.display().to_string());
    }
    Ok(written)
}
