//! From ID token claims to the user Qlik knows and the attributes its security rules can use.

use serde_json::{Map, Value};

use crate::auth::Identity;

/// Where the Qlik user directory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorySource {
    Fixed(String),
    Claim(String),
    /// The domain part of a `DOMAIN\user` or `user@domain` user id.
    FromUserId,
}

/// The configured mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMap {
    pub user_id_claim: String,
    /// Split `DOMAIN\user` / `user@domain` into directory and id.
    pub split_user_id: bool,
    pub directory: DirectorySource,
    /// Claim name → Qlik attribute name; array claims give one attribute per element.
    pub attributes: Vec<(String, String)>,
}

/// Claims that do not make a Qlik user.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("the ID token has no {claim:?} claim (it has: {present}); set auth.oidc.{key} to a claim the IdP sends, or configure the IdP to send it")]
    Missing {
        claim: String,
        key: &'static str,
        present: String,
    },
    #[error("claim {claim:?} = {value:?} cannot be a Qlik {what} (DOMAIN\\user values need auth.oidc.split_user_id = true)")]
    Unusable {
        claim: String,
        value: String,
        what: &'static str,
    },
}

impl ClaimMap {
    pub fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, ClaimError> {
        let present = || {
            let mut k: Vec<&str> = claims.keys().map(String::as_str).collect();
            k.sort_unstable();
            k.join(", ")
        };
        let raw_id = claims
            .get(&self.user_id_claim)
            .and_then(scalar)
            .ok_or_else(|| ClaimError::Missing {
                claim: self.user_id_claim.clone(),
                key: "user_id_claim",
                present: present(),
            })?;
        let (split_dir, user_id) = if self.split_user_id {
            split(&raw_id)
        } else {
            (None, raw_id.clone())
        };
        let user_directory = match &self.directory {
            DirectorySource::Fixed(d) => d.clone(),
            DirectorySource::Claim(c) => {
                claims
                    .get(c)
                    .and_then(scalar)
                    .ok_or_else(|| ClaimError::Missing {
                        claim: c.clone(),
                        key: "user_directory_claim",
                        present: present(),
                    })?
            }
            DirectorySource::FromUserId => split_dir.ok_or_else(|| ClaimError::Unusable {
                claim: self.user_id_claim.clone(),
                value: raw_id.clone(),
                what: "DOMAIN\\user or user@domain (split_user_id is set)",
            })?,
        };
        let directory_source = match &self.directory {
            DirectorySource::Fixed(_) => "auth.oidc.user_directory".to_string(),
            DirectorySource::Claim(c) => c.clone(),
            DirectorySource::FromUserId => self.user_id_claim.clone(),
        };
        for (what, v, claim) in [
            ("user id", &user_id, &self.user_id_claim),
            ("user directory", &user_directory, &directory_source),
        ] {
            if v.trim().is_empty() || v.contains('\\') || v.chars().any(char::is_control) {
                return Err(ClaimError::Unusable {
                    claim: claim.clone(),
                    value: v.clone(),
                    what,
                });
            }
        }
        let mut attributes = Vec::new();
        for (claim, name) in &self.attributes {
            match claims.get(claim) {
                Some(Value::Array(items)) => {
                    attributes.extend(items.iter().filter_map(scalar).map(|v| (name.clone(), v)))
                }
                Some(v) => {
                    if let Some(v) = scalar(v) {
                        attributes.push((name.clone(), v));
                    }
                }
                None => {}
            }
        }
        Ok(Identity {
            user_directory,
            user_id,
            attributes,
        })
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `CORP\alice` → (CORP, alice); `alice@corp.example.com` → (CORP, alice); else no directory.
fn split(v: &str) -> (Option<String>, String) {
    if let Some((d, u)) = v.split_once('\\') {
        (Some(d.to_string()), u.to_string())
    } else if let Some((u, d)) = v.rsplit_once('@') {
        let short = d.split('.').next().unwrap_or(d).to_ascii_uppercase();
        (Some(short), u.to_string())
    } else {
        (None, v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn map(directory: DirectorySource, split_user_id: bool) -> ClaimMap {
        ClaimMap {
            user_id_claim: "upn".into(),
            split_user_id,
            directory,
            attributes: vec![
                ("groups".into(), "Group".into()),
                ("email".into(), "Email".into()),
            ],
        }
    }

    #[test]
    fn user_attributes_and_split_forms() {
        let c = claims(
            json!({"upn": "alice@corp.example.com", "groups": ["Sales", "Admins"], "email": "a@x"}),
        );
        let i = map(DirectorySource::FromUserId, true).identity(&c).unwrap();
        assert_eq!(
            (i.user_directory.as_str(), i.user_id.as_str()),
            ("CORP", "alice")
        );
        assert_eq!(
            i.attributes,
            vec![
                ("Group".to_string(), "Sales".to_string()),
                ("Group".to_string(), "Admins".to_string()),
                ("Email".to_string(), "a@x".to_string())
            ]
        );
        let c = claims(json!({"upn": "CORP\\bob"}));
        let i = map(DirectorySource::FromUserId, true).identity(&c).unwrap();
        assert_eq!(
            (i.user_directory.as_str(), i.user_id.as_str()),
            ("CORP", "bob")
        );
        let i = map(DirectorySource::Fixed("AAD".into()), false)
            .identity(&claims(json!({"upn": "carol"})))
            .unwrap();
        assert_eq!(
            (i.user_directory.as_str(), i.user_id.as_str()),
            ("AAD", "carol")
        );
        let i = map(DirectorySource::Claim("tenant".into()), false)
            .identity(&claims(json!({"upn": "dave", "tenant": "T1"})))
            .unwrap();
        assert_eq!(i.user_directory, "T1");
    }

    #[test]
    fn missing_or_unusable_claims_name_the_claim() {
        let e = map(DirectorySource::Fixed("X".into()), false)
            .identity(&claims(json!({"sub": "1", "email": "e"})))
            .unwrap_err();
        assert!(
            e.to_string().contains("\"upn\"") && e.to_string().contains("email, sub"),
            "{e}"
        );
        let e = map(DirectorySource::FromUserId, true)
            .identity(&claims(json!({"upn": "plain"})))
            .unwrap_err();
        assert!(matches!(e, ClaimError::Unusable { .. }));
        let e = map(DirectorySource::Fixed("X".into()), false)
            .identity(&claims(json!({"upn": "a\\b"})))
            .unwrap_err();
        assert!(matches!(e, ClaimError::Unusable { .. }));
    }
}
