//! Forwarding to upstreams: HTTP, the engine websocket, and raw upgrades for a dev server's HMR.

pub mod cut_frame;
pub mod frames;
pub mod http;
pub mod public_urls;
pub mod tunnel;
pub mod websocket;
