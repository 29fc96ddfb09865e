//! Full domain and realm names → Qlik user directories, one table type for every provider
//! (`auth.negotiate.realm_map`, `auth.trusted_header.domain_map`, `auth.oidc.domain_map`).
//!
//! Names are compared whole and without case: `corp.attacker.example` is never `CORP`'s domain
//! because it starts with `corp`.

use std::collections::BTreeMap;

/// A table of full domain (or realm) names, each to the Qlik user directory its users get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainMap(BTreeMap<String, String>);

impl DomainMap {
    /// The table, or the first entry that cannot be one as `(domain, reason)`: an empty
    /// table, a name that is not a bare domain, two spellings of one domain.
    pub fn new(
        entries: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, (String, String)> {
        let mut out = BTreeMap::new();
        for (domain, dir) in entries {
            if domain.is_empty()
                || domain
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '\\' | '@' | '/'))
            {
                return Err((
                    domain,
                    "is not a domain name like \"CORP.EXAMPLE.COM\"".into(),
                ));
            }
            let key = domain.to_uppercase();
            if out.insert(key, dir).is_some() {
                return Err((
                    domain,
                    "is listed twice (names are compared without case)".into(),
                ));
            }
        }
        if out.is_empty() {
            return Err((
                String::new(),
                "is empty: it would refuse every user; list domains like { \"CORP.EXAMPLE.COM\" = \"CORP\" } or remove it".into(),
            ));
        }
        Ok(Self(out))
    }

    /// The directory for exactly `domain` (any case), or `None`.
    pub fn get(&self, domain: &str) -> Option<&str> {
        self.0.get(&domain.to_uppercase()).map(String::as_str)
    }

    /// The listed domains, for an error that says what would have been accepted.
    pub fn names(&self) -> String {
        self.0.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// A user name as a front proxy or IdP writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Qualified<'a> {
    /// `CORP` of `CORP\alice`, `corp.example.com` of `alice@corp.example.com`.
    pub domain: Option<&'a str>,
    pub user: &'a str,
}

/// Splits `DOMAIN\user` (at the first `\`) or `user@domain` (at the last `@`); anything else
/// is a bare name.
pub(crate) fn split(v: &str) -> Qualified<'_> {
    if let Some((d, u)) = v.split_once('\\') {
        Qualified {
            domain: Some(d),
            user: u,
        }
    } else if let Some((u, d)) = v.rsplit_once('@') {
        Qualified {
            domain: Some(d),
            user: u,
        }
    } else {
        Qualified {
            domain: None,
            user: v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corp() -> DomainMap {
        DomainMap::new([("corp.example.com".to_string(), "CORP".to_string())]).unwrap()
    }

    #[test]
    fn only_the_full_name_matches() {
        let m = corp();
        assert_eq!(m.get("CORP.EXAMPLE.COM"), Some("CORP"));
        assert_eq!(m.get("Corp.Example.Com"), Some("CORP"));
        for other in [
            "corp",
            "corp.attacker.example",
            "corp.example.com.evil",
            "example.com",
        ] {
            assert_eq!(m.get(other), None, "{other}");
        }
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(DomainMap::new(Vec::<(String, String)>::new()).is_err());
        assert!(DomainMap::new([("a b".into(), "X".into())]).is_err());
        assert!(DomainMap::new([("x@y".into(), "X".into())]).is_err());
        assert!(
            DomainMap::new([("A.COM".into(), "X".into()), ("a.com".into(), "Y".into())]).is_err()
        );
    }

    #[test]
    fn split_forms() {
        assert_eq!(split("CORP\\alice").domain, Some("CORP"));
        let q = split("a@b@corp.example.com");
        assert_eq!((q.domain, q.user), (Some("corp.example.com"), "a@b"));
        assert_eq!(split("alice").domain, None);
    }
}
