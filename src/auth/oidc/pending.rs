//! Logins in progress: what the callback needs to check the IdP's answer (state, nonce, PKCE
//! verifier, return_to), sealed (XChaCha20-Poly1305, authenticated, expiring) into the one
//! short-lived login cookie of the browser that started the login. Nothing is kept per login on
//! the server, so no number of other logins can push one out; only completed logins are
//! remembered, until their cookie would have expired anyway, so each completes once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::session::crypto::{KeyMaterial, Keyring};

/// How long a login may take at the IdP.
pub(super) const TTL: Duration = Duration::from_secs(600);
/// Completed logins remembered against replays. Each entry costs a callback carrying a state this
/// gateway sealed, so reaching the cap takes a flood; at the cap the oldest go, and a replay of
/// one of those still fails at the IdP (an authorization code is single use there too).
const MAX_USED: usize = 100_000;
/// Binds the sealed value to its purpose: a sealed session can never pass as a login cookie.
const CONTEXT: &[u8] = b"qlik-gateway oidc pending login v1";
/// Browsers keep cookies up to 4096 bytes (name and attributes included).
const MAX_COOKIE_VALUE: usize = 3800;

/// One login between the redirect to the IdP and the callback.
#[derive(Serialize, Deserialize)]
pub(super) struct Pending {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    /// Seconds since the Unix epoch when the login started.
    created: u64,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("return_to", &self.return_to)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Pending {
    pub(super) fn new(
        state: String,
        nonce: String,
        pkce_verifier: String,
        return_to: String,
    ) -> Self {
        Self {
            state,
            nonce,
            pkce_verifier,
            return_to,
            created: now_secs(),
        }
    }

    fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.created) >= TTL.as_secs() || self.created > now + 60
    }
}

/// Seals logins into cookie values and opens them at the callback, each once.
pub(super) struct PendingLogins {
    keys: Keyring,
    /// States of completed logins → when they were used.
    used: Mutex<HashMap<String, Instant>>,
}

impl Default for PendingLogins {
    /// A key of this process only: logins complete on the replica that started them.
    fn default() -> Self {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut k);
        Self::with_key(&KeyMaterial::new(k))
    }
}

impl PendingLogins {
    /// Logins sealed with `key`: replicas sharing it complete each other's logins.
    pub(super) fn with_key(key: &KeyMaterial) -> Self {
        Self::with_keys(key, &[])
    }

    /// Logins sealed with `current`; those sealed with one of `old` (before a key rotation)
    /// still complete. Completed logins are remembered per replica: a replay on another
    /// replica within the login's lifetime fails at the IdP, where the code is single use.
    pub(super) fn with_keys(current: &KeyMaterial, old: &[KeyMaterial]) -> Self {
        Self {
            keys: Keyring::new(current, old),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Seals `p` into the value of the login cookie.
    pub(super) fn put(&self, mut p: Pending) -> String {
        let seal = |p: &Pending| {
            let plain = serde_json::to_vec(p).unwrap_or_default();
            B64.encode(self.keys.seal(CONTEXT, &plain))
        };
        let v = seal(&p);
        if v.len() <= MAX_COOKIE_VALUE {
            return v;
        }
        // An extreme return_to must not make the cookie too big to be kept: the login still works.
        p.return_to = "/".into();
        seal(&p)
    }

    /// Opens the login cookie `value` if the IdP's answer carries its `state`: each login
    /// completes once. An answer with another state is refused without using the login up, so
    /// a forged or stray callback cannot cancel a login in progress. `Err(())` when there is no
    /// such login at all (not sealed by us, expired, or already completed).
    pub(super) fn take_matching(
        &self,
        value: &str,
        state: Option<&str>,
    ) -> Result<Option<Pending>, ()> {
        let raw = B64.decode(value).map_err(|_| ())?;
        let (plain, _) = self.keys.open(CONTEXT, &raw).map_err(|_| ())?;
        let p: Pending = serde_json::from_slice(&plain).map_err(|_| ())?;
        if p.expired(now_secs()) {
            return Err(());
        }
        if Some(p.state.as_str()) != state {
            return Ok(None);
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, at| at.elapsed() < TTL);
        if used.contains_key(&p.state) {
            return Err(());
        }
        while used.len() >= MAX_USED {
            let Some(oldest) = used
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            used.remove(&oldest);
        }
        used.insert(p.state.clone(), Instant::now());
        Ok(Some(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(state: &str) -> Pending {
        Pending::new(state.into(), "n".into(), "v".into(), "/app".into())
    }

    #[test]
    fn a_sealed_login_completes_once_with_its_own_state() {
        let p = PendingLogins::default();
        let c = p.put(login("s1"));
        assert!(matches!(p.take_matching(&c, Some("other")), Ok(None)));
        let got = p.take_matching(&c, Some("s1")).unwrap().unwrap();
        assert_eq!(got.return_to, "/app");
        assert!(p.take_matching(&c, Some("s1")).is_err(), "replay refused");
    }

    #[test]
    fn other_logins_never_push_one_out() {
        let p = PendingLogins::default();
        let mine = p.put(login("mine"));
        for i in 0..20_000 {
            let _ = p.put(login(&format!("flood{i}")));
        }
        assert!(p.take_matching(&mine, Some("mine")).unwrap().is_some());
    }

    #[test]
    fn forged_foreign_and_expired_cookies_are_no_login() {
        let p = PendingLogins::default();
        assert!(p.take_matching("junk", Some("s")).is_err());
        let other = PendingLogins::default().put(login("s"));
        assert!(p.take_matching(&other, Some("s")).is_err());
        let mut old = login("s");
        old.created -= TTL.as_secs();
        let c = p.put(old);
        assert!(p.take_matching(&c, Some("s")).is_err());
    }

    #[test]
    fn replicas_sharing_a_key_complete_each_others_logins() {
        let k = KeyMaterial::new([7u8; 32]);
        let a = PendingLogins::with_key(&k);
        let b = PendingLogins::with_key(&k);
        let c = a.put(login("s"));
        assert!(b.take_matching(&c, Some("s")).unwrap().is_some());
    }
}
