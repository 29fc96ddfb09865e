//! The mashup: a built SPA from a directory, a dev server such as Vite, or the built-in demo page.

pub mod builtin;
pub mod config;
pub mod static_files;

use crate::net::tls::TlsFileError;
use config::{MashupConfig, MashupSource};

/// Where mashup requests go.
pub enum Mashup {
    /// `mashup.dir`: static files from a directory.
    Dir(static_files::StaticFiles),
    /// `mashup.upstream`: proxied to a dev server.
    Upstream(DevServer),
    /// Neither: the built-in demo page.
    Builtin,
}

/// A mashup dev server (`mashup.upstream`), with what every request to it needs worked out once.
pub struct DevServer {
    /// `mashup.upstream` as configured.
    pub url: reqwest::Url,
    /// Where the gateway's HTTP client connects.
    pub upstream: crate::net::upstream::Origin,
    /// `Host` for requests to it.
    pub host: http::HeaderValue,
    /// Its own origin (`http://localhost:5173`), which it expects as `Origin` on upgrades.
    pub origin: http::HeaderValue,
}

impl DevServer {
    fn new(url: &reqwest::Url) -> Self {
        use crate::net::upstream::header_value;
        Self {
            upstream: crate::net::upstream::Origin::of_url(url),
            host: header_value(&crate::net::upstream::host_header(url)),
            origin: header_value(&url.origin().ascii_serialization()),
            url: url.clone(),
        }
    }
}

impl Mashup {
    /// From `[mashup]`.
    pub fn from_config(cfg: &MashupConfig) -> Result<Self, TlsFileError> {
        Ok(match &cfg.source {
            MashupSource::Dir(d) => {
                Mashup::Dir(static_files::StaticFiles::new(d.clone()).map_err(|e| {
                    TlsFileError::Unreadable {
                        path: d.clone(),
                        reason: e.to_string(),
                    }
                })?)
            }
            MashupSource::Upstream(u) => Mashup::Upstream(DevServer::new(u)),
            MashupSource::Builtin => Mashup::Builtin,
        })
    }
}
