//! The keytab in use, replaced without a restart: the file is checked every
//! `keytab_poll_interval` and on SIGHUP, and a changed keytab that loads cleanly takes over for
//! new logins. One that does not load is reported and the previous one stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
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

struct Loaded {
    cred: Cred,
    keys: Vec<KeytabEntry>,
    stamp: Option<Stamp>,
}

/// The acceptor credentials of the current keytab.
pub struct Acceptor {
    keytab: PathBuf,
    replay_cache: Option<String>,
    current: RwLock<Arc<Loaded>>,
}

/// A keytab that cannot serve logins.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Keytab(#[from] keytab::KeytabError),
    #[error("GSSAPI cannot use keytab {path}: {detail}")]
    Gss { path: PathBuf, detail: String },
}

impl Acceptor {
    /// Reads the keytab and acquires credentials for it. Blocks (file reads).
    pub fn load(keytab: &Path, replay_cache: Option<&str>) -> Result<Arc<Self>, LoadError> {
        let loaded = load(keytab, replay_cache)?;
        Ok(Arc::new(Self {
            keytab: keytab.to_path_buf(),
            replay_cache: replay_cache.map(str::to_string),
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    fn current(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The credentials to accept the next login with.
    pub fn cred(&self) -> Cred {
        self.current().cred.clone()
    }

    /// The keys of the keytab in use, for messages.
    pub fn keys(&self) -> Vec<KeytabEntry> {
        self.current().keys.clone()
    }

    pub fn keytab(&self) -> &Path {
        &self.keytab
    }

    /// Loads the keytab again if the file changed (or `force`). Blocks.
    pub fn reload(&self, force: bool) -> Result<bool, LoadError> {
        let now = stamp(&self.keytab);
        if !force && now == self.current().stamp {
            return Ok(false);
        }
        let loaded = load(&self.keytab, self.replay_cache.as_deref())?;
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
    /// reloads on SIGHUP. Needs a Tokio runtime; without one (e.g. `check-config`) it does nothing.
    pub fn watch(self: &Arc<Self>, every: Option<Duration>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        rt.spawn(watch(weak, every));
    }
}

async fn watch(weak: Weak<Acceptor>, every: Option<Duration>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = every.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let poll = async {
            match tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let forced = tokio::select! {
            _ = poll => false,
            _ = hangup => true,
        };
        let Some(acceptor) = weak.upgrade() else {
            return;
        };
        let a = acceptor.clone();
        let result = tokio::task::spawn_blocking(move || a.reload(forced)).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(
                keytab = %acceptor.keytab.display(),
                "keytab changed but cannot be used; still using the previous one: {e}"
            ),
            Err(e) => tracing::error!("keytab reload task failed: {e}"),
        }
    }
}

fn load(path: &Path, replay_cache: Option<&str>) -> Result<Loaded, LoadError> {
    // Stamp first: a write racing this load is then seen as a change on the next check.
    let stamp = stamp(path);
    let keys = keytab::read(path)?;
    let cred = gss::acquire(path, replay_cache).map_err(|e| LoadError::Gss {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(Loaded { cred, keys, stamp })
}
