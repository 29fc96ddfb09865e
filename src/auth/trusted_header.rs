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

    fn identity_from(&self, value: &str) -> Result<Identity, String> {
        let value = value.trim();
        let (dir, user) = if let Some((d, u)) = value.split_once('\\') {
            (Some(d.to_string()), u.to_string())
        } else if let Some((u, d)) = value.rsplit_once('@') {
            // user@corp.example.com: Qlik directories are short names; use the first DNS label,
            // uppercased, as Windows does for NetBIOS names.
            let short = d.split('.').next().unwrap_or(d).to_ascii_uppercase();
            (Some(short), u.to_string())
        } else {
            (None, value.to_string())
        };
        let dir = match (dir, &self.user_directory) {
            (_, Some(fixed)) => fixed.clone(),
            (Some(d), None) => d,
            (None, None) => {
                return Err("the value has no directory (DOMAIN\\user or user@domain) and auth.trusted_header.user_directory is not set".into())
            }
        };
        if user.is_empty() || dir.is_empty() || user.contains('\\') || dir.contains('\\') {
            return Err("empty user or directory".into());
        }
        Ok(Identity {
            user_directory: dir,
            user_id: user,
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

    #[test]
    fn parses_domain_forms() {
        let p = provider(None);
        let id = p.identity_from("CORP\\alice").unwrap();
        assert_eq!(
            (id.user_directory.as_str(), id.user_id.as_str()),
            ("CORP", "alice")
        );
        let id = p.identity_from("bob@corp.example.com").unwrap();
        assert_eq!(
            (id.user_directory.as_str(), id.user_id.as_str()),
            ("CORP", "bob")
        );
        assert!(p.identity_from("carol").is_err());
        let fixed = provider(Some("DEV"));
        assert_eq!(fixed.identity_from("carol").unwrap().user_directory, "DEV");
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_cidrs() {
        let p = provider(None);
        assert!(p.is_trusted("::ffff:10.0.0.7".parse().unwrap()));
        assert!(!p.is_trusted("10.0.1.7".parse().unwrap()));
    }
}
