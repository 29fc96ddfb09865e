//! Forwarding to upstreams: HTTP, the engine websocket, and raw upgrades for a dev server's HMR.

pub(crate) mod cut_frame;
pub(crate) mod frames;
pub(crate) mod http;
pub(crate) mod public_urls;
pub(crate) mod tunnel;
pub(crate) mod websocket;
