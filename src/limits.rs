//! Exact limits on what a client (or an upstream) may send: the request head measured as parsed,
//! and the refusals those limits produce.
//!
//! hyper only refuses a head when its read buffer fills before the head is complete, which depends
//! on how the bytes arrive. The server therefore gives hyper a buffer larger than any head it
//! accepts ([`HeadLimits::parser_cap`]) and measures every parsed head here, so the same request
//! gets the same answer however it is split into segments.

use http::{Request, StatusCode};

/// Room above `server.max_header_bytes` that hyper's read buffer gets, so that heads just over
/// the limit are parsed and refused here (with a body and a log line naming the key) rather than
/// cut off by the parser. Heads larger still are refused by hyper with a bare 431.
const PARSER_SLACK: usize = 32 * 1024;

/// hyper parses into a stack array of this many headers unless a larger count is configured.
pub(crate) const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// A request refused by a size limit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimitError {
    #[error("request line of {len} bytes exceeds server.max_request_line_bytes ({limit}); raise server.max_request_line_bytes")]
    RequestLine { len: usize, limit: usize },
    #[error("request headers of {len} bytes exceed server.max_header_bytes ({limit}); raise server.max_header_bytes")]
    HeaderBytes { len: usize, limit: usize },
    #[error(
        "{count} request headers exceed server.max_headers ({limit}); raise server.max_headers"
    )]
    HeaderCount { count: usize, limit: usize },
    #[error("request body to {path} exceeds server.max_gateway_body_bytes ({limit}); raise server.max_gateway_body_bytes")]
    GatewayBody { path: String, limit: usize },
    #[error("response headers from {origin} exceed server.max_upstream_header_bytes ({limit}); raise server.max_upstream_header_bytes")]
    UpstreamHeaders { origin: String, limit: usize },
}

impl LimitError {
    /// 414 for the request line (as nginx answers), 431 for headers, 413 for bodies, 502 when
    /// the upstream broke the limit.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::RequestLine { .. } => StatusCode::URI_TOO_LONG,
            Self::HeaderBytes { .. } | Self::HeaderCount { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::GatewayBody { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpstreamHeaders { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The JSON body's `error`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::RequestLine { .. } => "request_line_too_long",
            Self::HeaderBytes { .. } => "request_headers_too_large",
            Self::HeaderCount { .. } => "too_many_request_headers",
            Self::GatewayBody { .. } => "request_body_too_large",
            Self::UpstreamHeaders { .. } => "upstream_headers_too_large",
        }
    }

    /// What the client is told: the cause and the fix.
    pub(crate) fn public_message(&self) -> String {
        match self {
            Self::RequestLine { len, limit } => format!(
                "The request line (method and URL) is {len} bytes; this gateway accepts at most {limit} (server.max_request_line_bytes). Use a shorter URL."
            ),
            Self::HeaderBytes { len, limit } => format!(
                "The request headers are {len} bytes; this gateway accepts at most {limit} (server.max_header_bytes). Clear this site's cookies, or ask the administrator to raise the limit."
            ),
            Self::HeaderCount { count, limit } => format!(
                "The request has {count} headers; this gateway accepts at most {limit} (server.max_headers)."
            ),
            Self::GatewayBody { limit, .. } => format!(
                "The request body is larger than the {limit} bytes gateway endpoints accept (server.max_gateway_body_bytes)."
            ),
            Self::UpstreamHeaders { .. } => {
                "The service behind the gateway answered with response headers larger than the gateway accepts (server.max_upstream_header_bytes).".into()
            }
        }
    }
}

/// The request-head limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_request_line: usize,
}

impl HeadLimits {
    /// hyper's read buffer (HTTP/1) and header list limit (HTTP/2): strictly larger than any head
    /// [`Self::check`] accepts, so that hyper never decides about a head this module would accept.
    pub(crate) fn parser_cap(&self) -> usize {
        self.max_header_bytes + PARSER_SLACK
    }

    /// The header array size to give hyper, `None` for its default stack array (see
    /// [`HYPER_DEFAULT_MAX_HEADERS`]): larger than the configured count so that counts just over
    /// the limit reach [`Self::check`].
    pub(crate) fn parser_max_headers(&self) -> Option<usize> {
        (self.max_headers > HYPER_DEFAULT_MAX_HEADERS).then(|| self.max_headers * 2)
    }

    /// Measures the parsed head as HTTP/1.1 puts it on the wire (request line, `name: value\r\n`
    /// per header, the final `\r\n`; HTTP/2 requests are measured the same way, the authority
    /// counting as part of the URL) and refuses what exceeds a limit.
    pub(crate) fn check<B>(&self, req: &Request<B>) -> Result<(), LimitError> {
        let line = request_line_len(req);
        if line > self.max_request_line {
            return Err(LimitError::RequestLine {
                len: line,
                limit: self.max_request_line,
            });
        }
        let headers = req.headers();
        // `len` counts values, so repeated header lines count once each, as on the wire.
        if headers.len() > self.max_headers {
            return Err(LimitError::HeaderCount {
                count: headers.len(),
                limit: self.max_headers,
            });
        }
        let mut total = line + 2;
        for (name, value) in headers {
            total += name.as_str().len() + value.len() + 4;
        }
        if total > self.max_header_bytes {
            return Err(LimitError::HeaderBytes {
                len: total,
                limit: self.max_header_bytes,
            });
        }
        Ok(())
    }
}

/// `METHOD SP request-target SP HTTP/x.y CRLF`.
fn request_line_len<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (Some(s), Some(a), pq) => {
            s.as_str().len() + 3 + a.as_str().len() + pq.map_or(0, |p| p.as_str().len())
        }
        (None, Some(a), None) => a.as_str().len(),
        (_, _, pq) => pq.map_or(1, |p| p.as_str().len()),
    };
    req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len() + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_header_bytes: 200,
            max_headers: 3,
            max_request_line: 40,
        }
    }

    #[test]
    fn the_head_is_measured_as_on_the_wire() {
        let wire = "GET /a?b=c HTTP/1.1\r\nhost: x\r\nx-a: 12345\r\n\r\n";
        let req = Request::get("/a?b=c")
            .header("host", "x")
            .header("x-a", "12345")
            .body(())
            .unwrap();
        let exact = HeadLimits {
            max_header_bytes: wire.len(),
            ..limits()
        };
        assert!(exact.check(&req).is_ok());
        let under = HeadLimits {
            max_header_bytes: wire.len() - 1,
            ..limits()
        };
        assert!(matches!(
            under.check(&req),
            Err(LimitError::HeaderBytes { len, .. }) if len == wire.len()
        ));
    }

    #[test]
    fn request_line_and_count_limits() {
        let long = format!("/{}", "a".repeat(40));
        let req = Request::get(long.as_str()).body(()).unwrap();
        let e = limits().check(&req).unwrap_err();
        assert_eq!(e.status(), StatusCode::URI_TOO_LONG);
        assert!(e.to_string().contains("server.max_request_line_bytes"));

        let mut b = Request::get("/");
        for _ in 0..4 {
            b = b.header("x-a", "1");
        }
        let e = limits().check(&b.body(()).unwrap()).unwrap_err();
        assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(e.to_string().contains("server.max_headers"));
    }

    #[test]
    fn absolute_form_counts_scheme_and_authority() {
        let req = Request::get("http://h:1/p").body(()).unwrap();
        assert_eq!(
            request_line_len(&req),
            "GET http://h:1/p HTTP/1.1\r\n".len()
        );
    }

    #[test]
    fn hyper_gets_more_room_than_any_accepted_head() {
        let l = HeadLimits {
            max_header_bytes: 98304,
            max_headers: 100,
            max_request_line: 16384,
        };
        assert!(l.parser_cap() > l.max_header_bytes);
        assert_eq!(l.parser_max_headers(), None);
        let many = HeadLimits {
            max_headers: 150,
            ..l
        };
        assert_eq!(many.parser_max_headers(), Some(300));
    }
}
