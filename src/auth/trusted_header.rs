//! `trusted_header`: a front proxy (IIS, Apache with mod_auth_gssapi, an SSO appliance) has
//! authenticated the user and names them in a header. The header is believed only from the
//! configured proxy addresses.

use std::net::IpAddr;

use async_trait::async_trait;

use super::{AuthError, Identity, IdentityProvider, LoginOutcome, LoginRequest};

/// Reads the user from a header set by a trusted front proxy.
pub struct TrustedHeader {
    header: http::HeaderName,
    trusted: Vec<ipnet::IpNet>,
    user_directory: Option<String>,
}

impl TrustedHeader {
    /// `user_directory` is used when the header carries a bare user name; `DOMAIN\user` and
    /// `user@domain` values carry their own directory.
    pub fn new(
        header: http::HeaderName,
        trusted: Vec<ipnet::IpNet>,
        user_directory: Option<String>,
    ) -> Self {
        Self {
            header,
            trusted,
            user_directory,
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The directory comes from the value, never a shortened form of it: `DOMAIN\\user` and
    /// `user@domain` keep the full domain (so `corp.attacker.example` never becomes `CORP`). With
    /// `user_directory` set, a bare name gets it and any other domain is refused, so a value
    /// naming a foreign domain cannot be folded into the operator's directory.
    fn identity_from(&self, value: &str) -> Result<Identity, String> {
        if value.contains(',') {
            return Err("the value holds a comma-joined list; exactly one user is required".into());
        }
        if value != value.trim() {
            return Err("the value has leading or trailing spaces".into());
        }
        let (dir, user) = if let Some((d, u)) = value.split_once('\\') {
            (Some(d), u)
        } else if let Some((u, d)) = value.rsplit_once('@') {
            (Some(d), u)
        } else {
            (None, value)
        };
        let dir = match (dir, &self.user_directory) {
            (None, Some(fixed)) => fixed.clone(),
            (Some(d), Some(fixed)) if d.eq_ignore_ascii_case(fixed) => fixed.clone(),
            (Some(d), Some(fixed)) => {
                return Err(format!(
                    "the value names domain {d:?}, not auth.trusted_header.user_directory {fixed:?}"
                ))
            }
            (Some(d), None) => d.to_string(),
            (None, None) => {
                return Err("the value has no directory (DOMAIN\\user or user@domain) and auth.trusted_header.user_directory is not set".into())
            }
        };
        if user.is_empty() || dir.is_empty() || user.contains('\\') || dir.contains('\\') {
            return Err("empty user or directory".into());
        }
        Ok(Identity {
            user_directory: dir,
            user_id: user.to_string(),
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
        let identity = self
            .identity_from(value)
            .map_err(|reason| AuthError::BadHeaderValue {
                header: self.header.to_string(),
                reason,
            })?;
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
        TrustedHeader::new(
            http::HeaderName::from_static("x-remote-user"),
            vec!["10.0.0.0/24".parse().unwrap()],
            dir.map(String::from),
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

    #[test]
    fn parses_domain_forms() {
        let p = provider(None);
        let id = p.identity_from("CORP\\alice").unwrap();
        assert_eq!(
            (id.user_directory.as_str(), id.user_id.as_str()),
            ("CORP", "alice")
        );
        assert!(p.identity_from("carol").is_err());
        let fixed = provider(Some("DEV"));
        assert_eq!(fixed.identity_from("carol").unwrap().user_directory, "DEV");
        assert_eq!(
            fixed.identity_from("dev\\carol").unwrap().user_directory,
            "DEV"
        );
    }

    #[test]
    fn domains_are_never_cut_to_a_first_label() {
        let id = provider(None)
            .identity_from("alice@corp.attacker.example")
            .unwrap();
        assert_eq!(id.user_directory, "corp.attacker.example");
    }

    #[test]
    fn a_fixed_directory_refuses_other_domains() {
        let p = provider(Some("CORP"));
        for v in [
            "EVIL\\alice",
            "alice@evil.example.net",
            "alice@CORP.attacker.example",
        ] {
            assert!(p.identity_from(v).is_err(), "{v} must be refused");
        }
        assert_eq!(p.identity_from("alice").unwrap().user_directory, "CORP");
    }

    #[test]
    fn lists_are_refused() {
        let p = provider(Some("CORP"));
        assert!(p.identity_from("EVIL\\administrator, CORP\\bob").is_err());
        assert!(p.identity_from(" alice").is_err());
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
