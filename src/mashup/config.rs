//! `[mashup]`, checked: where the mashup comes from.

use std::path::PathBuf;

/// Where the mashup comes from.
#[derive(Debug, Clone)]
pub struct MashupConfig {
    pub source: MashupSource,
    pub public_paths: Vec<String>,
}

/// `mashup.dir`, `mashup.upstream`, or neither (the built-in page).
#[derive(Debug, Clone)]
pub enum MashupSource {
    Dir(PathBuf),
    Upstream(reqwest::Url),
    Builtin,
}
