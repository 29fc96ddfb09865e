//! The network layer: what every part of the gateway (and `doctor`) needs to talk to an upstream,
//! and nothing about users, sessions or Qlik. The pooled HTTP/1.1 client, TLS configurations and
//! certificate files, the reload watcher for files replaced in place, reading error chains, and
//! the client half of a websocket upgrade.

pub mod error_chain;
pub mod reload;
pub mod retry;
pub mod tls;
pub mod upstream;
pub mod ws_client;

use tokio::io::{AsyncRead, AsyncWrite};

/// Any byte stream (TCP or TLS) under an upstream connection or a websocket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
