//! `[mashup]`: where the mashup comes from, as written and checked.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config_checks::{parse_url, ConfigError};

/// Where the mashup comes from.
#[derive(Debug, Clone)]
pub struct MashupConfig {
    /// Where the mashup's files come from.
    pub source: MashupSource,
    /// Paths served without a login: exact paths, or prefixes ending in `/`.
    pub public_paths: Vec<String>,
}

/// `mashup.dir`, `mashup.upstream`, or neither (the built-in page).
#[derive(Debug, Clone)]
pub enum MashupSource {
    /// `mashup.dir`: a built mashup, static files with SPA fallback to `index.html`.
    Dir(PathBuf),
    /// `mashup.upstream`: a dev server (Vite), its HMR websocket included.
    Upstream(reqwest::Url),
    /// Neither is set: the built-in demo page.
    Builtin,
}

/// `[mashup]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMashup {
    /// mashup.dir: the built mashup's directory.
    pub dir: Option<PathBuf>,
    /// mashup.upstream: the URL of a dev server (Vite) to proxy instead.
    pub upstream: Option<String>,
    /// mashup.public_paths: paths served without a login (exact paths, or prefixes ending in "/").
    #[serde(default)]
    pub public_paths: Vec<String>,
}

/// Checks `[mashup]`; `qlik_mount` is `qlik.mount`, under which no path may be public.
pub fn validate(raw: RawMashup, qlik_mount: &str) -> Result<MashupConfig, ConfigError> {
    let source = source(raw.dir, raw.upstream)?;
    for p in &raw.public_paths {
        if !p.starts_with('/') || p.starts_with("/_gateway") {
            return Err(ConfigError::key(
                "mashup.public_paths",
                format!("{p:?} must start with / and must not be under /_gateway"),
            ));
        }
        if p.starts_with(&format!("{qlik_mount}/")) || p == qlik_mount {
            return Err(ConfigError::key(
                "mashup.public_paths",
                format!("{p:?} is under qlik.mount: Qlik paths always need a session"),
            ));
        }
    }
    Ok(MashupConfig {
        source,
        public_paths: raw.public_paths,
    })
}

fn source(dir: Option<PathBuf>, upstream: Option<String>) -> Result<MashupSource, ConfigError> {
    match (dir, upstream) {
        (Some(_), Some(_)) => Err(ConfigError::key(
            "mashup.upstream",
            "set either mashup.dir or mashup.upstream, not both",
        )),
        (Some(dir), None) => {
            if !dir.is_dir() {
                return Err(ConfigError::key(
                    "mashup.dir",
                    format!("{} is not a readable directory", dir.display()),
                ));
            }
            if !dir.join("index.html").is_file() {
                return Err(ConfigError::key(
                    "mashup.dir",
                    format!("{} has no index.html", dir.display()),
                ));
            }
            Ok(MashupSource::Dir(dir))
        }
        (None, Some(up)) => {
            let url = parse_url("mashup.upstream", &up)?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::key(
                    "mashup.upstream",
                    "must be an http:// or https:// URL",
                ));
            }
            Ok(MashupSource::Upstream(url))
        }
        (None, None) => Ok(MashupSource::Builtin),
    }
}

#[cfg(test)]
mod tests {
    use super::{validate, RawMashup};

    #[test]
    fn a_mashup_is_a_directory_or_an_upstream_not_both() {
        let raw = RawMashup {
            dir: Some("/srv/mashup".into()),
            upstream: Some("http://127.0.0.1:5173".into()),
            public_paths: Vec::new(),
        };
        let e = validate(raw, "/mashup").unwrap_err();
        let (key, msg) = (e.key_name().unwrap_or_default().to_string(), e.to_string());
        assert_eq!(key, "mashup.upstream");
        assert!(msg.contains("not both"), "{msg}");
    }
}
