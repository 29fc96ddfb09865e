//! OIDC: the IdP's discovery document is reachable and names the configured issuer.

use super::report::{Check, Report};
use crate::config::OidcConfig;
use crate::net::error_chain::root_cause;
use crate::net::tls;

/// Fetches `{issuer}/.well-known/openid-configuration`.
pub(super) async fn check(o: &OidcConfig, r: &mut Report) {
    let url = format!(
        "{}/.well-known/openid-configuration",
        o.issuer.as_str().trim_end_matches('/')
    );
    let roots = match &o.ca_cert {
        Some(ca) => tls::root_store(ca, true),
        None => Ok(tls::system_roots()),
    };
    let client = roots
        .map_err(|e| e.to_string())
        .and_then(|roots| {
            tls::client_config(roots, None, &[b"http/1.1"]).map_err(|e| e.to_string())
        })
        .and_then(|tls| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .timeout(o.timeout)
                .build()
                .map_err(|e| e.to_string())
        });
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            r.push(Check::fail("OIDC client", e).gw("check auth.oidc.ca_cert"));
            return;
        }
    };
    let result = async {
        let resp = client.get(&url).send().await.map_err(|e| root_cause(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let v: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
        let issuer = v["issuer"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        if issuer != o.issuer.as_str().trim_end_matches('/') {
            return Err(format!("the document names issuer {issuer:?}"));
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => r.push(Check::ok(format!("OIDC discovery {url}"))),
        Err(e) => {
            r.push(Check::fail(format!("OIDC discovery {url}"), e).gw(
                "check auth.oidc.issuer (exactly as the IdP names itself) and auth.oidc.ca_cert",
            ))
        }
    }
}
