//! The keytab in use, replaced without a restart: the file is checked every
//! `keytab_poll_interval` and on SIGHUP, and a changed keytab that loads cleanly takes over for
//! new logins. One that does not load is reported (once, however often it is retried) and the
//! previous one stays.
//!
//! GSSAPI reopens a keytab by path at every login, so the configured file is never handed to it:
//! each version that passed the checks is copied to a private file (mode 0600) and the
//! credentials point there. A half-written or wrong replacement therefore cannot break logins.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use libgssapi::credential::Cred;

use super::gss;
use super::keytab::{self, KeytabEntry};

/// Identifies one version of the keytab file (a rotated Kubernetes secret swaps a symlink, an
/// editor renames over it, `ktutil` rewrites in place: each changes at least one of these).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&m),
    })
}

/// One checked version of the keytab and the credentials made from its private copy.
pub(crate) struct Loaded {
    /// Acceptor credentials; valid as long as this value lives (it owns the copy).
    pub cred: Cred,
    pub keys: Vec<KeytabEntry>,
    stamp: Option<Stamp>,
    _copy: tempfile::TempPath,
}

/// Which key a keytab must hold to serve this site.
#[derive(Debug, Clone)]
pub(crate) enum Required {
    /// `auth.negotiate.service_principal`, as the keytab spells it.
    Principal(String),
    /// Some `HTTP/<host>@…` key.
    HttpHost(String),
}

/// The acceptor credentials of the current keytab.
pub(crate) struct Acceptor {
    keytab: PathBuf,
    replay_cache: Option<String>,
    required: Required,
    current: RwLock<Arc<Loaded>>,
}

/// A keytab that cannot serve logins.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Keytab(#[from] keytab::KeytabError),
    #[error("GSSAPI cannot use keytab {path}: {detail}")]
    Gss { path: PathBuf, detail: String },
    #[error("keytab {path} has no key for {want}; it has keys for {have}")]
    MissingKey {
        path: PathBuf,
        want: String,
        have: String,
    },
    /// The temp directory has no room (or quota) for the private copy.
    #[error("cannot make the private copy of keytab {path}: the temp directory {dir} is full ({source}); free space there, or set TMPDIR to a directory with room")]
    TempDirFull {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the private copy of keytab {path} in the temp directory {dir}: {source}; make it writable for the gateway's user, or set TMPDIR to a directory that is")]
    Copy {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl Acceptor {
    /// Reads the keytab and acquires credentials for it. Blocks (file reads).
    pub(crate) fn load(
        keytab: &Path,
        replay_cache: Option<&str>,
        required: Required,
    ) -> Result<Arc<Self>, LoadError> {
        let loaded = load(keytab, replay_cache, &required)?;
        Ok(Arc::new(Self {
            keytab: keytab.to_path_buf(),
            replay_cache: replay_cache.map(str::to_string),
            required,
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// The keytab version to accept the next login with.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The keys of the keytab in use, for messages.
    pub(crate) fn keys(&self) -> Vec<KeytabEntry> {
        self.current().keys.clone()
    }

    pub(crate) fn keytab(&self) -> &Path {
        &self.keytab
    }

    /// Loads the keytab again if the file changed (or `force`). Blocks.
    pub(crate) fn reload(&self, force: bool) -> Result<bool, LoadError> {
        let now = stamp(&self.keytab);
        if !force && now == self.current().stamp {
            return Ok(false);
        }
        let loaded = load(&self.keytab, self.replay_cache.as_deref(), &self.required)?;
        tracing::info!(
            keytab = %self.keytab.display(),
            keys = %loaded.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "),
            "keytab reloaded"
        );
        let loaded = Arc::new(loaded);
        match self.current.write() {
            Ok(mut g) => *g = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        Ok(true)
    }

    /// Watches the keytab until the acceptor is dropped: polls every `every` (if set) and
    /// reloads on SIGHUP ([`crate::net::reload`]).
    pub(crate) fn watch(self: &Arc<Self>, every: Option<Duration>) {
        crate::net::reload::watch(self, every);
    }
}

impl crate::net::reload::Reload for Acceptor {
    type Error = LoadError;

    fn reload(&self, force: bool) -> Result<bool, LoadError> {
        Acceptor::reload(self, force)
    }

    fn failed(&self) -> &'static str {
        "keytab changed but cannot be used; still using the previous one"
    }

    fn file(&self) -> &Path {
        &self.keytab
    }
}

fn load(path: &Path, replay_cache: Option<&str>, required: &Required) -> Result<Loaded, LoadError> {
    // Stamp first: a write racing this load is then seen as a change on the next check.
    let stamp = stamp(path);
    let bytes = std::fs::read(path).map_err(|source| keytab::KeytabError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let keys = keytab::parse_file(path, &bytes)?;
    let have = |ok: &dyn Fn(&KeytabEntry) -> bool| keys.iter().any(ok);
    let (present, want) = match required {
        Required::Principal(p) => (have(&|k| k.principal.eq_ignore_ascii_case(p)), p.clone()),
        Required::HttpHost(h) => (
            have(&|k| {
                k.service_host_realm().is_some_and(|(s, host, _)| {
                    s.eq_ignore_ascii_case("HTTP") && host.eq_ignore_ascii_case(h)
                })
            }),
            format!("HTTP/{h}"),
        ),
    };
    if !present {
        return Err(LoadError::MissingKey {
            path: path.to_path_buf(),
            want,
            have: keytab::principal_list(&keys),
        });
    }
    // The bytes that were checked are the bytes GSSAPI gets.
    let copy_err = |source: std::io::Error| {
        let source = without_temp_name(source);
        let (path, dir) = (path.to_path_buf(), std::env::temp_dir());
        match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                LoadError::TempDirFull { path, dir, source }
            }
            _ => LoadError::Copy { path, dir, source },
        }
    };
    let mut copy = tempfile::Builder::new()
        .prefix("qlik-gateway-keytab-")
        .tempfile()
        .map_err(copy_err)?;
    std::io::Write::write_all(copy.as_file_mut(), &bytes).map_err(copy_err)?;
    let copy = copy.into_temp_path();
    let cred = gss::acquire(&copy, replay_cache).map_err(|e| LoadError::Gss {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(Loaded {
        cred,
        keys,
        stamp,
        _copy: copy,
    })
}

/// `e` without the copy's random name that tempfile's own errors carry (its `Write` on the file
/// adds it too, so the copy is written through the plain `File`): the name tells the operator
/// nothing and would make every retry's message a new one.
fn without_temp_name(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error().is_some() {
        e
    } else {
        e.kind().into()
    }
}
