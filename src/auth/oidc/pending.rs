//! Logins in progress: what the callback needs to check the IdP's answer. Kept server-side under
//! a random id in one short-lived cookie, so repeated attempts replace that cookie instead of
//! adding more, and the map is bounded in size and age.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a login may take at the IdP.
pub const TTL: Duration = Duration::from_secs(600);
const MAX: usize = 10_000;

/// One login between the redirect to the IdP and the callback.
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    created: Instant,
}

impl Pending {
    pub fn new(state: String, nonce: String, pkce_verifier: String, return_to: String) -> Self {
        Self {
            state,
            nonce,
            pkce_verifier,
            return_to,
            created: Instant::now(),
        }
    }
}

#[derive(Default)]
pub struct PendingLogins {
    map: Mutex<HashMap<String, Pending>>,
}

impl PendingLogins {
    /// Stores `p` and returns its id for the cookie. When full, the oldest logins make room.
    pub fn put(&self, p: Pending) -> String {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, v| v.created.elapsed() < TTL);
        while map.len() >= MAX {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, v)| v.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        let id = crate::session::id::SessionId::generate()
            .as_cookie_value()
            .to_string();
        map.insert(id.clone(), p);
        id
    }

    /// Takes the login for `id` if the IdP's answer carries its `state`: each login completes
    /// once. An answer with another state leaves it in place, so a forged or stray callback
    /// cannot cancel a login in progress. `Err(())` when there is no such login at all.
    pub fn take_matching(&self, id: &str, state: Option<&str>) -> Result<Option<Pending>, ()> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            None => Err(()),
            Some(p) if p.created.elapsed() >= TTL => {
                map.remove(id);
                Err(())
            }
            Some(p) if Some(p.state.as_str()) == state => Ok(map.remove(id)),
            Some(_) => Ok(None),
        }
    }
}
