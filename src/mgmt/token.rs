//! The management API's bearer token: `mgmt.token` from the config, else
//! generated once into `<data_dir>/mgmt.token` (mode 0600) and reused on
//! every later start, so `roost ctl --data-dir DIR` finds it.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::Config;

/// File name of the generated token, inside the data directory.
pub const TOKEN_FILE: &str = "mgmt.token";

/// Random bytes in a generated token (hex-encoded: 64 characters).
const TOKEN_BYTES: usize = 32;

/// Where the generated token lives for data directory `dir`.
pub fn token_path(dir: &Path) -> PathBuf {
    dir.join(TOKEN_FILE)
}

/// The token the node accepts: the configured one, else the one in the data
/// directory (created on first start).
pub fn resolve(cfg: &Config) -> anyhow::Result<String> {
    if !cfg.mgmt.token.is_empty() {
        return Ok(cfg.mgmt.token.clone());
    }
    load_or_create(&cfg.node.data_dir)
}

/// Reads `<dir>/mgmt.token`, creating it with a fresh random token (0600)
/// when it does not exist.
pub fn load_or_create(dir: &Path) -> anyhow::Result<String> {
    let path = token_path(dir);
    match create_new(&path) {
        Ok(mut file) => {
            let token = generate().context("cannot generate a management token")?;
            file.write_all(token.as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(path = %path.display(), "mgmt_token_generated");
            Ok(token)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            warn_if_readable_by_others(&path);
            read(dir)
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// File name of the generated cluster cookie, inside the data directory.
pub const COOKIE_FILE: &str = "cluster.cookie";

/// The cluster cookie: the configured one, else `<data_dir>/cluster.cookie`
/// (created on first start with a random one, mode 0600). Never logged.
pub fn cluster_cookie(cfg: &Config) -> anyhow::Result<String> {
    if !cfg.cluster.cookie.is_empty() {
        return Ok(cfg.cluster.cookie.clone());
    }
    let path = cfg.node.data_dir.join(COOKIE_FILE);
    match create_new(&path) {
        Ok(mut file) => {
            let cookie = generate().context("cannot generate a cluster cookie")?;
            file.write_all(cookie.as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(
                path = %path.display(),
                "cluster_cookie_generated: this node accepts no peer until every node has the \
                 same cookie (cluster.cookie, ROOST_CLUSTER__COOKIE or --cookie)"
            );
            Ok(cookie)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            warn_if_readable_by_others(&path);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let cookie = text.trim();
            if cookie.is_empty() {
                bail!(
                    "{} is empty (delete it to have the node generate one)",
                    path.display()
                );
            }
            Ok(cookie.to_owned())
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Reads the token from `<dir>/mgmt.token` (what `roost ctl` does).
pub fn read(dir: &Path) -> anyhow::Result<String> {
    let path = token_path(dir);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "{} does not hold a valid token (delete it to have the node generate a new one)",
            path.display()
        );
    }
    Ok(token.to_owned())
}

/// Compares in time independent of where the two differ.
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(unix)]
fn create_new(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_new(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "mgmt_token_file_permissions_too_open");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// 32 random bytes from the OS, hex-encoded.
fn generate() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("roost-token-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn generated_once_with_mode_0600_and_reused() {
        let dir = temp_dir("reuse");
        let first = load_or_create(&dir).expect("created");
        assert_eq!(first.len(), 2 * TOKEN_BYTES);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_path(&dir))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(load_or_create(&dir).expect("read back"), first);
        assert_eq!(read(&dir).expect("read"), first);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn configured_token_wins_and_writes_no_file() {
        let dir = temp_dir("configured");
        let mut cfg = Config::default();
        cfg.node.data_dir = dir.clone();
        cfg.mgmt.token = "0123456789abcdef-configured".into();
        assert_eq!(resolve(&cfg).expect("token"), cfg.mgmt.token);
        assert!(!token_path(&dir).exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_empty_token_file_is_an_error_naming_the_file() {
        let dir = temp_dir("empty");
        std::fs::write(token_path(&dir), "\n").expect("write");
        let err = load_or_create(&dir).expect_err("empty file");
        assert!(format!("{err:#}").contains("mgmt.token"), "{err:#}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn matches_compares_whole_tokens() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
        assert!(!matches("abc", ""));
    }
}
