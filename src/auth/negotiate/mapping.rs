//! From a Kerberos principal (`alice@CORP.EXAMPLE.COM`) to the user Qlik knows (`CORP\alice`).

use crate::auth::domain_map::DomainMap;
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
    /// `auth.negotiate.realm_map`: per realm, by its full name; principals of other realms
    /// are refused.
    PerRealm(DomainMap),
    /// Nothing configured: only the gateway's own realms (those of its service principal),
    /// each by its full name; principals of every other realm are refused.
    OwnRealms(DomainMap),
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
    #[error("principal {principal} is from realm {realm}, which {listed} (it maps {mapped}); add the realm to auth.negotiate.realm_map to let its users in")]
    UnmappedRealm {
        principal: String,
        realm: String,
        /// What the realm is missing from: the configured map or the gateway's own realms.
        listed: &'static str,
        mapped: String,
    },
    #[error("principal {0:?} has no user name and realm")]
    Malformed(String),
    /// `alice/admin@R` is another principal than `alice@R`; cutting the instance off would
    /// let a service or admin principal log in as the plain user.
    #[error("principal {0:?} has an instance (name/instance@REALM); only user principals (name@REALM) can log in")]
    Instance(String),
}

impl PrincipalMap {
    /// The Qlik identity for `principal` (as GSSAPI displays it: `user[/instance]@REALM`).
    pub fn identity(&self, principal: &str) -> Result<Identity, MappingError> {
        let (name, realm) = principal
            .rsplit_once('@')
            .filter(|(n, r)| !n.is_empty() && !r.is_empty())
            .ok_or_else(|| MappingError::Malformed(principal.to_string()))?;
        if name.contains('/') {
            return Err(MappingError::Instance(principal.to_string()));
        }
        let user_id = match self.case {
            UserIdCase::Lower => name.to_lowercase(),
            UserIdCase::Upper => name.to_uppercase(),
            UserIdCase::Preserve => name.to_string(),
        };
        let user_directory = match &self.directory {
            DirectoryRule::Fixed(d) => d.clone(),
            DirectoryRule::PerRealm(map) | DirectoryRule::OwnRealms(map) => map
                .get(realm)
                .map(str::to_string)
                .ok_or_else(|| MappingError::UnmappedRealm {
                    principal: principal.to_string(),
                    realm: realm.to_string(),
                    listed: match self.directory {
                        DirectoryRule::OwnRealms(_) => {
                            "is not the gateway's own realm and auth.negotiate.realm_map is not set"
                        }
                        _ => "auth.negotiate.realm_map does not list",
                    },
                    mapped: map.names(),
                })?,
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

    fn table(entries: &[(&str, &str)]) -> DomainMap {
        DomainMap::new(entries.iter().map(|(a, b)| (a.to_string(), b.to_string()))).unwrap()
    }

    fn own() -> DirectoryRule {
        DirectoryRule::OwnRealms(table(&[("CORP.EXAMPLE.COM", "CORP")]))
    }

    #[test]
    fn case_folding() {
        let m = map(own(), UserIdCase::Lower);
        let i = m.identity("Alice@CORP.EXAMPLE.COM").unwrap();
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
            DirectoryRule::PerRealm(table(&[("CORP.EXAMPLE.COM", "CORP")])),
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
        let m = map(own(), UserIdCase::Lower);
        for p in ["alice", "@R", "alice@", "/x@CORP.EXAMPLE.COM"] {
            assert!(m.identity(p).is_err(), "{p}");
        }
    }

    #[test]
    fn instances_are_refused_not_cut_off() {
        let m = map(own(), UserIdCase::Lower);
        let e = m.identity("alice/admin@CORP.EXAMPLE.COM").unwrap_err();
        assert!(matches!(e, MappingError::Instance(_)), "{e}");
        assert!(
            e.to_string().contains("alice/admin@CORP.EXAMPLE.COM"),
            "{e}"
        );
    }

    #[test]
    fn by_default_only_the_gateways_own_realm_gets_in() {
        let m = map(own(), UserIdCase::Lower);
        // Same first label, another realm: not merged into CORP.
        let e = m.identity("alice@CORP.PARTNER.ORG").unwrap_err();
        assert!(
            matches!(e, MappingError::UnmappedRealm { ref realm, .. } if realm == "CORP.PARTNER.ORG"),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("CORP.PARTNER.ORG") && msg.contains("auth.negotiate.realm_map"),
            "{msg}"
        );
        assert!(m.identity("alice@CORP").is_err());
    }
}
