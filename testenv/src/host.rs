//! What the test environment needs from the host: the infrastructure binaries that
//! `infra/install.sh` caches, private working directories, and an unprivileged user for servers
//! that refuse to run as root.

use std::{
    env,
    ffi::CString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// Finds an infrastructure binary: `$FTGO_BIN_DIR`, then `$FTGO_CACHE/bin`, then
/// `~/.cache/ftgo/bin` (where `just infra` links them), then Postgres's Debian directory, then `PATH`.
pub fn binary(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = env::var_os("FTGO_BIN_DIR") {
        dirs.push(dir.into());
    }
    if let Some(cache) = env::var_os("FTGO_CACHE") {
        dirs.push(PathBuf::from(cache).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/ftgo/bin"));
    }
    dirs.push("/usr/lib/postgresql/15/bin".into());
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        // The real path: a server running as another user may not be allowed through the
        // symlinks' directory (`~/.cache` of root, say).
        .map(|found| found.canonicalize().unwrap_or(found))
        .with_context(|| format!("`{name}` is not installed: run `just infra` (looked in {dirs:?})"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `$FTGO_CACHE/<sub>` (default `~/.cache/ftgo/<sub>`), created if missing: what is worth keeping
/// between runs, outside the repository (built image archives, for instance).
pub fn cache_dir(sub: &str) -> Result<PathBuf> {
    let cache = env::var_os("FTGO_CACHE")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/ftgo")));
    let dir = cache.context("neither FTGO_CACHE nor HOME is set")?.join(sub);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A fresh private directory for one server. Removed on drop unless `FTGO_TESTENV_KEEP=1`, which
/// keeps data and logs for a post-mortem (the path is logged).
pub fn workdir(server: &str) -> Result<TempDir> {
    let mut dir = tempfile::Builder::new().prefix(&format!("ftgo-{server}-")).tempdir()?;
    if env::var("FTGO_TESTENV_KEEP").is_ok_and(|v| v == "1") {
        dir.disable_cleanup(true);
        tracing::info!(server, dir = %dir.path().display(), "keeping the working directory");
    }
    Ok(dir)
}

/// The user a server runs as. Postgres refuses to run as root, so when the tests run as root (CI
/// containers do), it runs as `postgres` or `nobody` instead.
#[derive(Debug, Clone, Copy)]
pub struct RunAs {
    uid: u32,
    gid: u32,
}

impl RunAs {
    /// `None` when we are not root: servers then simply run as us.
    pub fn unprivileged() -> Result<Option<Self>> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        for name in ["postgres", "nobody"] {
            let cname = CString::new(name)?;
            // SAFETY: getpwnam returns null or a pointer to a static record we copy at once.
            let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
            if !pw.is_null() {
                let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
                return Ok(Some(Self { uid, gid }));
            }
        }
        bail!("running as root, but neither a `postgres` nor a `nobody` user exists to run servers as")
    }

    /// Makes `path` (and everything below it) belong to this user.
    pub fn own(&self, path: &Path) -> Result<()> {
        for entry in walk(path)? {
            std::os::unix::fs::lchown(&entry, Some(self.uid), Some(self.gid))
                .with_context(|| format!("chown {}", entry.display()))?;
        }
        Ok(())
    }

    pub fn apply(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        cmd.uid(self.uid).gid(self.gid);
    }
}

fn walk(path: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![path.to_owned()];
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            out.extend(walk(&entry?.path())?);
        }
    }
    Ok(out)
}
