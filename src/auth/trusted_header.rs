//! `trusted_header`: a front proxy (IIS, Apache with mod_auth_gssapi, an SSO appliance) has
//! authenticated the user and names them in a header. The header is believed only from the
//! configured proxy addresses.

use std::net::IpAddr;

use async_trait::async_trait;

use super::domain_map::{self, DomainMap};
use super::{AuthError, Identity, IdentityProvider, LoginOutcome, LoginRequest};

/// Reads the user from a header set by a trusted front proxy.
pub(crate) struct TrustedHeader {
    header: http::HeaderName,
    trusted: Vec<ipnet::IpNet>,
    user_directory: Option<String>,
    domain_map: Option<DomainMap>,
}

impl TrustedHeader {
    /// `user_directory` is used when the header carries a bare user name; the domain of a
    /// `DOMAIN\user` or `user@domain` value is looked up in `domain_map`, or without one must
    /// be `user_directory` itself.
    pub(crate) fn new(
        header: http::HeaderName,
        trusted: Vec<ipnet::IpNet>,
        user_directory: Option<String>,
        domain_map: Option<DomainMap>,
    ) -> Self {
        Self {
            header,
            trusted,
            user_directory,
            domain_map,
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The directory comes from the value's domain, looked up by its full name (so
    /// `corp.attacker.example` is never `CORP`); a domain the configuration does not name is
    /// refused rather than folded into the operator's directory.
    fn identity_from(&self, value: &str) -> Result<Identity, AuthError> {
        let bad = |reason: String| AuthError::BadHeaderValue {
            header: self.header.to_string(),
            reason,
        };
        if value.contains(',') {
            return Err(bad(
                "the value holds a comma-joined list; exactly one user is required".into(),
            ));
        }
        if value != value.trim() {
            return Err(bad("the value has leading or trailing spaces".into()));
        }
        let q = domain_map::split(value);
        let dir = match (q.domain, &self.domain_map, &self.user_directory) {
            (None, _, Some(fixed)) => fixed.clone(),
            (None, _, None) => {
                return Err(bad("the value is a bare user name and auth.trusted_header.user_directory is not set; send DOMAIN\\user or user@domain, or set user_directory".into()))
            }
            (Some(d), Some(map), _) => map.get(d).map(str::to_string).ok_or_else(|| {
                AuthError::UnknownDomain {
                    domain: d.to_string(),
                    key: "auth.trusted_header.domain_map",
                    known: map.names(),
                }
            })?,
            (Some(d), None, Some(fixed)) if d.eq_ignore_ascii_case(fixed) => fixed.clone(),
            (Some(d), None, fixed) => {
                return Err(AuthError::UnknownDomain {
                    domain: d.to_string(),
                    key: "auth.trusted_header.domain_map",
                    known: fixed.clone().unwrap_or_default(),
                })
            }
        };
        if q.user.is_empty() || dir.is_empty() || q.user.contains('\\') {
            return Err(bad("empty user or directory".into()));
        }
        Ok(Identity {
            user_directory: dir,
            user_id: q.user.to_string(),
            attributes: Vec::new(),
        })
    }
}

/// IPv4-mapped IPv6 peers (`::ffff:10.0.0.5`) match IPv4 CIDRs.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[async_trait]
impl IdentityProvider for TrustedHeader {
    fn name(&self) -> &'static str {
        "trusted_header"
    }

    async fn login(&self, req: &LoginRequest<'_>) -> Result<LoginOutcome, AuthError> {
        let peer = req.peer.ip();
        let value = req.headers.get(&self.header);
        if !self.is_trusted(peer) {
            return match value {
                Some(_) => Err(AuthError::UntrustedPeer {
                    header: self.header.to_string(),
                    peer,
                }),
                None => Err(AuthError::MissingHeader {
                    header: self.header.to_string(),
                    peer,
                }),
            };
        }
        let Some(value) = value else {
            return Err(AuthError::MissingHeader {
                header: self.header.to_string(),
                peer,
            });
        };
        // A browser can add its own copy before the front proxy's; believing either one lets
        // the client choose the user, so two copies are refused outright.
        if req.headers.get_all(&self.header).iter().nth(1).is_some() {
            return Err(AuthError::BadHeaderValue {
                header: self.header.to_string(),
                reason: "the header was sent more than once; exactly one value is required".into(),
            });
        }
        let value = value.to_str().map_err(|_| AuthError::BadHeaderValue {
            header: self.header.to_string(),
            reason: "not visible ASCII".into(),
        })?;
        let identity = self.identity_from(value)?;
        Ok(LoginOutcome::Authenticated {
            identity,
            headers: http::HeaderMap::new(),
            return_to: None,
            id_token: None,
        })
    }

    fn identity_headers(&self) -> Vec<http::HeaderName> {
        vec![self.header.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(dir: Option<&str>) -> TrustedHeader {
        with_map(dir, None)
    }

    fn with_map(dir: Option<&str>, map: Option<&[(&str, &str)]>) -> TrustedHeader {
        TrustedHeader::new(
            http::HeaderName::from_static("x-remote-user"),
            vec!["10.0.0.0/24".parse().unwrap()],
            dir.map(String::from),
            map.map(|m| {
                DomainMap::new(m.iter().map(|(a, b)| (a.to_string(), b.to_string()))).unwrap()
            }),
        )
    }

    fn test_request(headers: &http::HeaderMap) -> LoginRequest<'_> {
        LoginRequest {
            headers,
            peer: "10.0.0.7:40000".parse().unwrap(),
            host: None,
            return_to: "/",
            query: None,
        }
    }

    fn who(p: &TrustedHeader, v: &str) -> Option<(String, String)> {
        p.identity_from(v)
            .ok()
            .map(|i| (i.user_directory, i.user_id))
    }

    #[test]
    fn a_fixed_directory_takes_bare_names_and_its_own_domain_only() {
        let p = provider(Some("CORP"));
        assert_eq!(who(&p, "carol"), Some(("CORP".into(), "carol".into())));
        assert_eq!(
            who(&p, "corp\\carol"),
            Some(("CORP".into(), "carol".into()))
        );
        for v in [
            "EVIL\\alice",
            "alice@evil.example.net",
            "alice@CORP.attacker.example",
            "alice@corp.example.com",
        ] {
            let e = p.identity_from(v).expect_err(v);
            assert!(matches!(e, AuthError::UnknownDomain { .. }), "{v}: {e}");
            assert!(
                e.to_string().contains("auth.trusted_header.domain_map"),
                "{e}"
            );
        }
        let none = provider(None);
        assert!(none.identity_from("carol").is_err());
        assert!(
            none.identity_from("CORP\\carol").is_err(),
            "no table: no domain is known"
        );
    }

    #[test]
    fn a_domain_table_maps_full_names_only() {
        let p = with_map(
            None,
            Some(&[("CORP.EXAMPLE.COM", "CORP"), ("CORP", "CORP")]),
        );
        assert_eq!(
            who(&p, "alice@corp.example.com"),
            Some(("CORP".into(), "alice".into()))
        );
        assert_eq!(
            who(&p, "CORP\\alice"),
            Some(("CORP".into(), "alice".into()))
        );
        for v in [
            "alice@corp.attacker.example",
            "alice@example.com",
            "EVIL\\alice",
            "alice",
        ] {
            assert!(p.identity_from(v).is_err(), "{v}");
        }
        let e = p.identity_from("alice@corp.attacker.example").unwrap_err();
        assert!(e.to_string().contains("corp.attacker.example"), "{e}");
    }

    #[test]
    fn lists_are_refused() {
        let p = provider(Some("CORP"));
        for v in ["EVIL\\administrator, CORP\\bob", " alice"] {
            let e = p.identity_from(v).unwrap_err();
            assert!(matches!(e, AuthError::BadHeaderValue { .. }), "{v}: {e}");
        }
    }

    #[tokio::test]
    async fn two_copies_of_the_header_are_refused() {
        let p = provider(Some("CORP"));
        let mut headers = http::HeaderMap::new();
        headers.append("x-remote-user", "EVIL\\administrator".parse().unwrap());
        headers.append("x-remote-user", "CORP\\bob".parse().unwrap());
        let req = test_request(&headers);
        let err = p.login(&req).await.err().expect("refused");
        assert!(
            matches!(err, AuthError::BadHeaderValue { ref reason, .. } if reason.contains("more than once")),
            "{err}"
        );
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_cidrs() {
        let p = provider(None);
        assert!(p.is_trusted("::ffff:10.0.0.7".parse().unwrap()));
        assert!(!p.is_trusted("10.0.1.7".parse().unwrap()));
    }
}
