//! Reading the client's `Authorization: Negotiate …` and recognising NTLM inside it.

use base64::Engine;

use super::error::{Failure, NegotiateError};

/// The decoded Negotiate token, `None` when the request carries none (first leg: challenge).
pub(crate) fn read(headers: &http::HeaderMap) -> Result<Option<Vec<u8>>, NegotiateError> {
    for v in headers.get_all(http::header::AUTHORIZATION) {
        let Ok(v) = v.to_str() else {
            return Err(NegotiateError::new(
                Failure::Malformed,
                "Authorization header is not ASCII",
            ));
        };
        let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
        let is_negotiate = scheme.eq_ignore_ascii_case("Negotiate");
        let is_ntlm = scheme.eq_ignore_ascii_case("NTLM");
        if !is_negotiate && !is_ntlm {
            // Basic, Bearer, …: not ours; the challenge tells the browser what is.
            continue;
        }
        let b64 = rest.trim();
        if b64.is_empty() {
            return Err(NegotiateError::new(
                Failure::Malformed,
                format!("{scheme} without a token"),
            ));
        }
        let token = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
            .map_err(|e| {
                NegotiateError::new(
                    Failure::Malformed,
                    format!("the {scheme} token is not base64: {e}"),
                )
            })?;
        if is_ntlm || is_ntlm_token(&token) {
            return Err(NegotiateError::new(
                Failure::Ntlm,
                "the browser sent an NTLM token instead of Kerberos",
            ));
        }
        return Ok(Some(token));
    }
    Ok(None)
}

const NTLMSSP: &[u8] = b"NTLMSSP\0";
// DER of the mechanism OIDs as they appear in a SPNEGO NegTokenInit's mechTypes.
const OID_NTLM: &[u8] = &[
    0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a,
];
const OID_KRB5: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02,
];
const OID_MS_KRB5: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02,
];

/// NTLM, bare or wrapped in SPNEGO: the NTLMSSP signature (a NEGOTIATE message as the optimistic
/// token), or a mechanism list that offers NTLM and no Kerberos. A Kerberos token never carries
/// either: its variable parts are encrypted.
pub(crate) fn is_ntlm_token(token: &[u8]) -> bool {
    let has = |needle: &[u8]| token.windows(needle.len()).any(|w| w == needle);
    if token.starts_with(NTLMSSP) || has(NTLMSSP) {
        return true;
    }
    has(OID_NTLM) && !has(OID_KRB5) && !has(OID_MS_KRB5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn with_auth(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn no_or_foreign_authorization_means_challenge() {
        assert_eq!(read(&http::HeaderMap::new()).unwrap(), None);
        assert_eq!(read(&with_auth("Basic YWxpY2U6cHc=")).unwrap(), None);
    }

    #[test]
    fn garbage_is_malformed() {
        for v in ["Negotiate", "Negotiate %%%not-base64%%%", "Negotiate   "] {
            let e = read(&with_auth(v)).unwrap_err();
            assert_eq!(e.kind, Failure::Malformed, "{v}");
        }
    }

    #[test]
    fn ntlm_in_every_wrapping_is_recognised() {
        let negotiate_msg = b"NTLMSSP\0\x01\x00\x00\x00\x07\x82\x08\xa2";
        assert_eq!(
            read(&with_auth(&format!("NTLM {}", b64(negotiate_msg))))
                .unwrap_err()
                .kind,
            Failure::Ntlm
        );
        assert_eq!(
            read(&with_auth(&format!("Negotiate {}", b64(negotiate_msg))))
                .unwrap_err()
                .kind,
            Failure::Ntlm
        );
        // SPNEGO NegTokenInit offering only NTLM, NTLMSSP as the mechToken.
        let mut spnego = vec![
            0x60, 0x40, 0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02, 0xa0, 0x36, 0x30, 0x34,
            0xa0, 0x0e, 0x30, 0x0c,
        ];
        spnego.extend(OID_NTLM);
        spnego.extend([0xa2, 0x22, 0x04, 0x20]);
        spnego.extend(negotiate_msg);
        assert!(is_ntlm_token(&spnego));
        // The same list without the NTLMSSP token still offers only NTLM.
        let mut list_only = vec![0x60, 0x1a, 0xa0, 0x0e, 0x30, 0x0c];
        list_only.extend(OID_NTLM);
        assert!(is_ntlm_token(&list_only));
        // Kerberos first, NTLM as an alternative: not NTLM.
        let mut both = list_only.clone();
        both.extend(OID_MS_KRB5);
        assert!(!is_ntlm_token(&both));
    }

    #[test]
    fn a_kerberos_token_passes() {
        let t = [
            0x60u8, 0x82, 0x02, 0x9f, 0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02, 0xa0,
        ];
        assert_eq!(
            read(&with_auth(&format!("Negotiate {}", b64(&t)))).unwrap(),
            Some(t.to_vec())
        );
    }
}

/// Property tests (`PROPTEST_CASES` sets the case count; see the README's long run).
#[cfg(test)]
mod proptests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        let scheme = prop::sample::select(vec![
            "Negotiate",
            "negotiate",
            "NTLM",
            "Basic",
            "Bearer",
            "",
        ]);
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..120),
            (scheme.clone(), " {0,3}", "[A-Za-z0-9+/=%_ -]{0,60}")
                .prop_map(|(s, sp, t)| format!("{s}{sp}{t}").into_bytes()),
            (scheme, prop::collection::vec(any::<u8>(), 0..90)).prop_map(|(s, b)| {
                format!(
                    "{s} {}",
                    base64::engine::general_purpose::STANDARD.encode(b)
                )
                .into_bytes()
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any Authorization headers: no panic, and a token never bigger than its base64.
        #[test]
        fn any_authorization_is_read_without_panic(values in prop::collection::vec(header_value(), 0..3)) {
            let mut h = http::HeaderMap::new();
            let mut total = 0;
            for v in &values {
                if let Ok(v) = http::HeaderValue::from_bytes(v) {
                    total += v.len();
                    h.append(http::header::AUTHORIZATION, v);
                }
            }
            if let Ok(Some(token)) = read(&h) {
                prop_assert!(!token.is_empty() && token.len() <= total * 3 / 4);
                prop_assert!(!is_ntlm_token(&token));
            }
        }

        /// A Kerberos-looking token comes back as sent, whatever the scheme's case and padding.
        #[test]
        fn tokens_round_trip(token in prop::collection::vec(any::<u8>(), 1..200), upper in any::<bool>(), pad in any::<bool>()) {
            prop_assume!(!is_ntlm_token(&token));
            let b64 = if pad {
                base64::engine::general_purpose::STANDARD.encode(&token)
            } else {
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(&token)
            };
            let scheme = if upper { "NEGOTIATE" } else { "Negotiate" };
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_str(&format!("{scheme} {b64}")).unwrap());
            prop_assert_eq!(read(&h).ok().flatten(), Some(token));
        }

        #[test]
        fn ntlm_detection_never_panics(token in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = is_ntlm_token(&token);
        }
    }
}
