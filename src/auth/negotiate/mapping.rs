//! From a Kerberos principal (`alice@CORP.EXAMPLE.COM`) to the user Qlik knows (`CORP\alice`).

use std::collections::BTreeMap;

use crate::auth::Identity;

/// How the Qlik user id is spelled: Kerberos names are case-sensitive on the wire while Windows
/// accepts any case at logon, so `Alice` and `alice` would otherwise become two Qlik users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserIdCase {
    #[default]
    Lower,
    Upper,
    Preserve,
}

/// Where the Qlik user directory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryRule {
    /// Every user gets this directory.
    Fixed(String),
    /// Per realm (keys upper-cased); principals of other realms are refused.
    PerRealm(BTreeMap<String, String>),
    /// The realm's first label, upper-cased (`CORP.EXAMPLE.COM` → `CORP`), as Windows shows it.
    FirstRealmLabel,
}

/// The configured principal → identity mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalMap {
    pub directory: DirectoryRule,
    pub case: UserIdCase,
}

/// A principal the mapping cannot turn into a Qlik user.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("principal {principal} is from realm {realm}, which auth.negotiate.realm_map does not list (it maps {mapped}); add the realm to realm_map to let its users in")]
    UnmappedRealm {
        principal: String,
        realm: String,
        mapped: String,
    },
    #[error("principal {0:?} has no user name and realm")]
    Malformed(String),
}

impl PrincipalMap {
    /// The Qlik identity for `principal` (as GSSAPI displays it: `user[/instance]@REALM`).
    pub fn identity(&self, principal: &str) -> Result<Identity, MappingError> {
        let (name, realm) = principal
            .rsplit_once('@')
            .filter(|(n, r)| !n.is_empty() && !r.is_empty())
            .ok_or_else(|| MappingError::Malformed(principal.to_string()))?;
        let first = name.split('/').next().unwrap_or(name);
        if first.is_empty() {
            return Err(MappingError::Malformed(principal.to_string()));
        }
        let user_id = match self.case {
            UserIdCase::Lower => first.to_lowercase(),
            UserIdCase::Upper => first.to_uppercase(),
            UserIdCase::Preserve => first.to_string(),
        };
        let user_directory = match &self.directory {
            DirectoryRule::Fixed(d) => d.clone(),
            DirectoryRule::PerRealm(map) => {
                map.get(&realm.to_uppercase()).cloned().ok_or_else(|| {
                    MappingError::UnmappedRealm {
                        principal: principal.to_string(),
                        realm: realm.to_string(),
                        mapped: map.keys().cloned().collect::<Vec<_>>().join(", "),
                    }
                })?
            }
            DirectoryRule::FirstRealmLabel => {
                realm.split('.').next().unwrap_or(realm).to_uppercase()
            }
        };
        Ok(Identity {
            user_directory,
            user_id,
            attributes: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(directory: DirectoryRule, case: UserIdCase) -> PrincipalMap {
        PrincipalMap { directory, case }
    }

    #[test]
    fn first_component_and_case_folding() {
        let m = map(DirectoryRule::FirstRealmLabel, UserIdCase::Lower);
        let i = m.identity("Alice/admin@CORP.EXAMPLE.COM").unwrap();
        assert_eq!(
            (i.user_directory.as_str(), i.user_id.as_str()),
            ("CORP", "alice")
        );
        let m = map(DirectoryRule::Fixed("QS".into()), UserIdCase::Preserve);
        assert_eq!(m.identity("Alice@X.Y").unwrap().user_id, "Alice");
        let m = map(DirectoryRule::Fixed("QS".into()), UserIdCase::Upper);
        assert_eq!(m.identity("alice@X.Y").unwrap().user_id, "ALICE");
    }

    #[test]
    fn realm_map_refuses_other_realms() {
        let m = map(
            DirectoryRule::PerRealm(BTreeMap::from([("CORP.EXAMPLE.COM".into(), "CORP".into())])),
            UserIdCase::Lower,
        );
        assert_eq!(
            m.identity("bob@corp.example.com").unwrap().user_directory,
            "CORP"
        );
        let e = m.identity("eve@PARTNER.ORG").unwrap_err();
        assert!(
            matches!(e, MappingError::UnmappedRealm { ref realm, .. } if realm == "PARTNER.ORG")
        );
        assert!(e.to_string().contains("CORP.EXAMPLE.COM"));
    }

    #[test]
    fn malformed_names_are_refused() {
        let m = map(DirectoryRule::FirstRealmLabel, UserIdCase::Lower);
        for p in ["alice", "@R", "alice@", "/x@R"] {
            assert!(m.identity(p).is_err(), "{p}");
        }
    }
}
