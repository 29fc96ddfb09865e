//! Property tests of the trusted-header provider through its public entry point only
//! (`IdentityProvider::login`), so that they hold whatever the parsing inside looks like.
//! `PROPTEST_CASES` sets the case count; see the README's long run.

use futures_util::FutureExt;
use proptest::prelude::*;

use super::trusted_header::TrustedHeader;
use super::{IdentityProvider, LoginOutcome, LoginRequest};

const HEADER: &str = "x-remote-user";

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..60),
        "[A-Za-z\\\\@. \t-]{0,20}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any header value, from a trusted peer or not, with or without a fixed directory: no
    /// panic; an identity only from a trusted peer, and never an empty or backslashed name.
    #[test]
    fn any_value_is_read_without_panic(v in value(), trusted in any::<bool>(), fixed in any::<bool>()) {
        let p = TrustedHeader::new(
            http::HeaderName::from_static(HEADER),
            vec!["10.0.0.0/24".parse().unwrap()],
            fixed.then(|| "CORP".to_string()),
            (!fixed).then(|| {
                super::domain_map::DomainMap::new([
                    ("corp".to_string(), "CORP".to_string()),
                    ("corp.example.com".to_string(), "CORP".to_string()),
                ])
                .unwrap()
            }),
        );
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_bytes(&v) {
            headers.insert(HEADER, v);
        }
        let peer = if trusted { "10.0.0.5:4000" } else { "10.0.1.5:4000" };
        let req = LoginRequest {
            headers: &headers,
            peer: peer.parse().unwrap(),
            host: None,
            return_to: "/",
            query: None,
        };
        let outcome = p.login(&req).now_or_never();
        prop_assert!(outcome.is_some(), "the provider waits on nothing");
        if let Some(Ok(LoginOutcome::Authenticated { identity, .. })) = outcome {
            prop_assert!(trusted);
            for part in [&identity.user_directory, &identity.user_id] {
                prop_assert!(!part.is_empty() && !part.contains('\\'), "{identity:?}");
            }
        }
    }
}
