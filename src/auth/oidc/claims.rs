//! From ID token claims to the user Qlik knows and the attributes its security rules can use.

use serde_json::{Map, Value};

use crate::auth::domain_map::{self, DomainMap, Qualified};
use crate::auth::Identity;

/// Where the Qlik user directory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorySource {
    Fixed(String),
    Claim(String),
    /// The domain part of a `DOMAIN\user` or `user@domain` user id: through `domain_map`
    /// when set; without it only a `DOMAIN\user` domain, taken as written.
    FromUserId,
}

/// The configured mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMap {
    pub user_id_claim: String,
    /// Split `DOMAIN\user` / `user@domain` into directory and id.
    pub split_user_id: bool,
    pub directory: DirectorySource,
    /// `auth.oidc.domain_map`: full domain name → user directory (with `FromUserId`).
    pub domain_map: Option<DomainMap>,
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
    #[error("claim {claim:?} = {value:?} names domain {domain:?}, which auth.oidc.domain_map does not list{known}; add the full domain name to auth.oidc.domain_map if its users should get in")]
    UnknownDomain {
        claim: String,
        value: String,
        domain: String,
        known: String,
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
        let q = if self.split_user_id {
            domain_map::split(&raw_id)
        } else {
            Qualified {
                domain: None,
                user: &raw_id,
            }
        };
        let user_id = q.user.to_string();
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
            DirectorySource::FromUserId => self.directory_of(&raw_id, q.domain)?,
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

impl ClaimMap {
    /// The directory for a split user id's domain: its full name in `domain_map`, never a
    /// shortened form (`alice@corp.attacker.example` is not `CORP`).
    fn directory_of(&self, raw_id: &str, domain: Option<&str>) -> Result<String, ClaimError> {
        let unknown = |domain: &str, known: String| ClaimError::UnknownDomain {
            claim: self.user_id_claim.clone(),
            value: raw_id.to_string(),
            domain: domain.to_string(),
            known,
        };
        match (domain, &self.domain_map) {
            (None, _) => Err(ClaimError::Unusable {
                claim: self.user_id_claim.clone(),
                value: raw_id.to_string(),
                what: "DOMAIN\\user or user@domain (split_user_id is set)",
            }),
            (Some(d), Some(map)) => map
                .get(d)
                .map(str::to_string)
                .ok_or_else(|| unknown(d, format!(" (it lists {})", map.names()))),
            // A NetBIOS name is a directory as it is; a DNS domain needs the table.
            (Some(d), None) if raw_id.contains('\\') => Ok(d.to_string()),
            (Some(d), None) => Err(unknown(d, " (it is not set)".into())),
        }
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
            domain_map: Some(
                DomainMap::new([
                    ("corp.example.com".to_string(), "CORP".to_string()),
                    ("CORP".to_string(), "CORP".to_string()),
                ])
                .unwrap(),
            ),
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
    fn split_domains_map_by_their_full_name() {
        let m = map(DirectorySource::FromUserId, true);
        let e = m
            .identity(&claims(json!({"upn": "alice@corp.attacker.example"})))
            .unwrap_err();
        assert!(
            matches!(e, ClaimError::UnknownDomain { ref domain, .. } if domain == "corp.attacker.example"),
            "{e}"
        );
        assert!(e.to_string().contains("auth.oidc.domain_map"), "{e}");
        let mut no_table = m.clone();
        no_table.domain_map = None;
        assert!(
            no_table
                .identity(&claims(json!({"upn": "alice@corp.example.com"})))
                .is_err(),
            "without a table a DNS domain is not guessed"
        );
        let i = no_table
            .identity(&claims(json!({"upn": "CORP\\bob"})))
            .unwrap();
        assert_eq!(i.user_directory, "CORP");
        assert!(m.identity(&claims(json!({"upn": "EVIL\\bob"}))).is_err());
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
