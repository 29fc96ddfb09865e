//! Checks a [`RawQlik`] and resolves it into a [`QlikConfig`].

use std::path::PathBuf;

use super::raw::RawQlik;
use super::{HeaderAuth, QlikConfig, QlikMode, QlikNodeConfig};
use qlik_gateway_core::config_checks::{is_token_char, parse_url, readable, ConfigError};

/// Checks `[qlik]`: the node URLs, the mode, the cookie name, the mount, and that the QPS
/// certificate files are readable.
pub fn validate(raw: RawQlik, warnings: &mut Vec<String>) -> Result<QlikConfig, ConfigError> {
    let nodes = nodes(&raw)?;
    let proxy_url = nodes[0].proxy_url.clone();
    let qps_api_url = nodes[0].qps_api_url.clone();
    let vp = virtual_proxy(&raw.virtual_proxy)?;
    let header_name =
        match &raw.header_name {
            Some(h) => Some(http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                ConfigError::key("qlik.header_name", "not a valid HTTP header name")
            })?),
            None => None,
        };
    let mode = mode(&raw, header_name.as_ref(), &proxy_url, warnings)?;
    let session_cookie = session_cookie(raw.session_cookie, &vp, &proxy_url, warnings)?;
    let client_cert = required_file("qlik.client_cert", raw.client_cert)?;
    let client_key = required_file("qlik.client_key", raw.client_key)?;
    let ca_cert = required_file("qlik.ca_cert", raw.ca_cert)?;
    let engine_url = match &raw.engine_url {
        Some(u) => Some(engine_url(u)?),
        None => None,
    };
    let mount = mount(raw.mount, &vp)?;
    Ok(QlikConfig {
        proxy_url,
        qps_api_url,
        nodes,
        health_interval: raw
            .health_interval
            .unwrap_or(std::time::Duration::from_secs(10)),
        virtual_proxy: vp,
        mode,
        session_cookie,
        client_cert,
        client_key,
        ca_cert,
        header_name,
        engine_url,
        mount,
        connect_timeout: raw.connect_timeout,
        qps_timeout: raw.qps_timeout,
        response_timeout: raw.response_timeout,
    })
}

/// `qlik.proxy_url` and `qlik.qps_api_url`, paired in order: at least one node.
fn nodes(raw: &RawQlik) -> Result<Vec<QlikNodeConfig>, ConfigError> {
    let proxies = raw.proxy_url.clone().into_vec();
    let qpses = raw.qps_api_url.clone().into_vec();
    if proxies.is_empty() {
        return Err(ConfigError::key(
            "qlik.proxy_url",
            "missing: the Qlik proxy's URL (or a list of the proxy nodes' URLs)",
        ));
    }
    if proxies.len() != qpses.len() {
        return Err(ConfigError::key(
            "qlik.qps_api_url",
            format!(
                "lists {} QPS API URLs for {} proxy nodes; give one per qlik.proxy_url, in the same order (each node's sessions live in its own proxy service)",
                qpses.len(),
                proxies.len()
            ),
        ));
    }
    let mut nodes = Vec::new();
    for (p, q) in proxies.iter().zip(&qpses) {
        let proxy_url = parse_url("qlik.proxy_url", p)?;
        if !matches!(proxy_url.scheme(), "http" | "https") {
            return Err(ConfigError::key(
                "qlik.proxy_url",
                "must be an https:// (or http://) URL",
            ));
        }
        if proxy_url.path() != "/" {
            return Err(ConfigError::key(
                "qlik.proxy_url",
                "must not contain a path; put the virtual proxy prefix in qlik.virtual_proxy",
            ));
        }
        let qps_api_url = parse_url("qlik.qps_api_url", q)?;
        if qps_api_url.scheme() != "https" {
            return Err(ConfigError::key(
                "qlik.qps_api_url",
                "must be https:// (the QPS API on port 4243 requires mutual TLS)",
            ));
        }
        nodes.push(QlikNodeConfig {
            proxy_url,
            qps_api_url,
        });
    }
    Ok(nodes)
}

/// `qlik.virtual_proxy` without its slashes.
fn virtual_proxy(raw: &str) -> Result<String, ConfigError> {
    let vp = raw.trim_matches('/').to_string();
    if !vp
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
    {
        return Err(ConfigError::key(
            "qlik.virtual_proxy",
            "a virtual proxy prefix is lowercase a-z, 0-9 and - . _ ~ only",
        ));
    }
    Ok(vp)
}

/// `qlik.mode`, with the header and pattern a header-authentication virtual proxy needs.
fn mode(
    raw: &RawQlik,
    header_name: Option<&http::HeaderName>,
    proxy_url: &reqwest::Url,
    warnings: &mut Vec<String>,
) -> Result<QlikMode, ConfigError> {
    match raw.mode.as_str() {
        "session" => Ok(QlikMode::Session),
        "ticket" => Ok(QlikMode::Ticket),
        "header" => {
            let name = header_name.cloned().ok_or_else(|| {
                ConfigError::key(
                    "qlik.header_name",
                    "missing: qlik.mode = \"header\" needs the virtual proxy's authentication header name (e.g. \"hdr-usr\")",
                )
            })?;
            let lower = name.as_str();
            if lower.starts_with("x-qlik-") {
                return Err(ConfigError::key(
                    "qlik.header_name",
                    "Qlik reserves X-Qlik-* headers; the virtual proxy's header has another name (e.g. hdr-usr)",
                ));
            }
            if let Some(p) = &raw.header_pattern {
                if !(p.contains("$id") && p.is_ascii()) {
                    return Err(ConfigError::key(
                        "qlik.header_pattern",
                        "must be US-ASCII and contain $id (and $ud for a dynamic user directory), like the virtual proxy's pattern (e.g. \"$ud\\\\$id\")",
                    ));
                }
            }
            if proxy_url.scheme() != "https" {
                warnings.push(format!(
                    "SECURITY: qlik.mode = \"header\" over plain http ({proxy_url}): the user header travels unencrypted and anyone who can reach the Qlik proxy can claim to be any user. Use an https:// qlik.proxy_url and restrict the header virtual proxy to the gateway's address."
                ));
            }
            Ok(QlikMode::Header(HeaderAuth {
                name,
                pattern: raw.header_pattern.clone(),
            }))
        }
        other => Err(ConfigError::key(
            "qlik.mode",
            format!("unknown mode {other:?}; expected \"session\", \"ticket\" or \"header\""),
        )),
    }
}

/// `qlik.session_cookie`, by default the one Qlik names after the virtual proxy.
fn session_cookie(
    configured: Option<String>,
    vp: &str,
    proxy_url: &reqwest::Url,
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let session_cookie = configured.unwrap_or_else(|| {
        if vp.is_empty() {
            "X-Qlik-Session".into()
        } else {
            format!("X-Qlik-Session-{vp}")
        }
    });
    if session_cookie.is_empty() || !session_cookie.bytes().all(is_token_char) {
        return Err(ConfigError::key(
            "qlik.session_cookie",
            "must be the virtual proxy's session cookie header name, e.g. X-Qlik-Session-mashup",
        ));
    }
    if proxy_url.scheme() == "http" && !session_cookie.ends_with("-HTTP") {
        warnings.push(format!(
            "qlik.proxy_url is plain http: Qlik (since Feb 2019) names the session cookie {session_cookie}-HTTP over http; set qlik.session_cookie accordingly"
        ));
    }
    Ok(session_cookie)
}

/// `qlik.engine_url`: the engine's `wss://` origin.
fn engine_url(u: &str) -> Result<reqwest::Url, ConfigError> {
    let url = parse_url("qlik.engine_url", u)?;
    if url.scheme() != "wss" || url.path() != "/" {
        return Err(ConfigError::key(
            "qlik.engine_url",
            "must be the engine's wss:// address without a path, e.g. \"wss://qlik-engine.example.com:4747\"",
        ));
    }
    Ok(url)
}

/// `qlik.mount` without a trailing slash, by default `/<virtual proxy>` (or `/qlik`).
fn mount(configured: Option<String>, vp: &str) -> Result<String, ConfigError> {
    match configured {
        Some(m) => {
            let m = m.trim_end_matches('/').to_string();
            if !m.starts_with('/') || m.len() < 2 || m.contains("//") || m.starts_with("/_gateway")
            {
                return Err(ConfigError::key(
                    "qlik.mount",
                    "must be a path like \"/qlik\" (not \"/\", not under /_gateway)",
                ));
            }
            Ok(m)
        }
        None if vp.is_empty() => Ok("/qlik".into()),
        None => Ok(format!("/{vp}")),
    }
}

fn required_file(key: &str, p: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    let p = p.ok_or_else(|| {
        ConfigError::key(
            key,
            "missing: the QPS API needs the certificates exported from the QMC (client.pem, client_key.pem, root.pem)",
        )
    })?;
    readable(key, &p)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use figment::providers::{Format, Toml};

    use super::super::raw::RawQlik;
    use super::validate;

    #[test]
    fn missing_qlik_certificates_name_where_they_come_from() {
        let toml = r#"
proxy_url = "https://qlik.example.com"
qps_api_url = "https://qlik.example.com:4243"
virtual_proxy = "mashup"
"#;
        let raw: RawQlik = figment::Figment::from(Toml::string(toml))
            .extract()
            .unwrap();
        let e = validate(raw, &mut Vec::new()).unwrap_err();
        let (key, msg) = (e.key_name().unwrap_or_default().to_string(), e.to_string());
        assert!(key.starts_with("qlik."), "{key}");
        assert!(msg.contains("QMC"), "{msg}");
    }
}
