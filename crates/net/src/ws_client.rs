//! The client half of a websocket upgrade, on a connection opened for it
//! ([`super::upstream::UpstreamClient::connect`]).

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// Why an upgrade gave no websocket.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The upgrade request cannot be built from the URI and headers.
    #[error("{0}")]
    Request(String),
    /// The server did not answer the upgrade within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server answered without upgrading: its status and the start of its body (the reason
    /// Qlik's proxy gives for a 403).
    #[error("HTTP {status}")]
    Refused {
        /// The HTTP status of the answer.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// The websocket handshake failed (connection closed, invalid answer).
    #[error("websocket handshake: {0}")]
    Failed(tungstenite::Error),
}

/// How much of a refusal's body is kept.
const REFUSAL_BODY_CHARS: usize = 200;

/// Upgrades `io` to a websocket: `GET uri` (`ws://` or `wss://`; its authority is the `Host` unless
/// `headers` name one) with `headers` and the upgrade's own, answered within `timeout`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    uri: &str,
    mut headers: HeaderMap,
    config: Option<WebSocketConfig>,
    timeout: Duration,
) -> Result<WebSocketStream<S>, HandshakeError> {
    let mut req = Request::get(uri)
        .body(())
        .map_err(|e| HandshakeError::Request(e.to_string()))?;
    if !headers.contains_key(header::HOST) {
        if let Some(a) = req.uri().authority() {
            headers.insert(header::HOST, super::upstream::header_value(a.as_str()));
        }
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    if let Ok(k) = HeaderValue::from_str(&tungstenite::handshake::client::generate_key()) {
        headers.insert("sec-websocket-key", k);
    }
    *req.headers_mut() = headers;
    match tokio::time::timeout(
        timeout,
        tokio_tungstenite::client_async_with_config(req, io, config),
    )
    .await
    {
        Err(_) => Err(HandshakeError::Timeout(timeout)),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => Err(HandshakeError::Refused {
            status: resp.status().as_u16(),
            body: resp
                .body()
                .as_ref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .chars()
                        .take(REFUSAL_BODY_CHARS)
                        .collect()
                })
                .unwrap_or_default(),
        }),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback server answering one upgrade request with `answer` (or the upgrade itself).
    async fn server(answer: Option<&'static str>) -> tokio::net::TcpStream {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            match answer {
                Some(a) => {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(a.as_bytes()).await;
                }
                None => {
                    let _ws = tokio_tungstenite::accept_async(s).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        tokio::net::TcpStream::connect(addr).await.unwrap()
    }

    #[tokio::test]
    async fn upgrades_and_reports_refusals_with_their_reason() {
        let t = Duration::from_secs(5);
        let io = server(None).await;
        if let Err(e) = handshake(io, "ws://q/app", HeaderMap::new(), None, t).await {
            panic!("{e}");
        }
        let io = server(Some(
            "HTTP/1.1 403 Forbidden\r\ncontent-length: 22\r\n\r\nOrigin not in the list",
        ))
        .await;
        match handshake(io, "ws://q/app", HeaderMap::new(), None, t).await {
            Err(HandshakeError::Refused { status, body }) => {
                assert_eq!((status, body.as_str()), (403, "Origin not in the list"));
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
