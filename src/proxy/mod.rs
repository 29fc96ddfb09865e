//! Forwarding to upstreams: HTTP, the engine websocket, and raw upgrades for a dev server's HMR.

pub mod cut_frame;
pub mod frames;
pub mod headers;
pub mod http;
pub mod public_urls;
pub mod registry;
pub mod tunnel;
pub mod upstream;
pub mod websocket;
