//! The mashup: a built SPA from a directory, a dev server such as Vite, or the built-in demo page.

pub mod builtin;
pub mod static_files;

use crate::config::{Config, MashupSource};
use crate::tls::TlsFileError;

/// Where mashup requests go.
pub enum Mashup {
    Dir(static_files::StaticFiles),
    Upstream(reqwest::Url),
    Builtin,
}

impl Mashup {
    /// From `[mashup]`.
    pub fn from_config(cfg: &Config) -> Result<Self, TlsFileError> {
        Ok(match &cfg.mashup.source {
            MashupSource::Dir(d) => {
                Mashup::Dir(static_files::StaticFiles::new(d.clone()).map_err(|e| {
                    TlsFileError::Unreadable {
                        path: d.clone(),
                        reason: e.to_string(),
                    }
                })?)
            }
            MashupSource::Upstream(u) => Mashup::Upstream(u.clone()),
            MashupSource::Builtin => Mashup::Builtin,
        })
    }
}
