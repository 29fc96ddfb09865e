//! Qlik's fatal proxy notifications (`OnSessionTimedOut`, `OnNoEngineAvailable`, …) on an engine
//! socket: they always reach the client unchanged, logged with the user and counted
//! ([`crate::stats`]). When one says the Qlik session ended, the gateway renews it at once, so the
//! client's `resume()` or reconnect carries on without a login (see [`FatalWatch`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::close::{close_frame_for, login_prompt, session_lost_close};
use crate::qlik_sessions::LifecycleError;
use crate::session::{QlikSession, SessionId};
use crate::sockets::CloseReason;
use crate::state::AppState;
use crate::stats::FATAL_NOTIFICATIONS;

/// Text frames from Qlik up to this size are read for fatal notifications; larger ones are
/// responses.
pub(super) const FATAL_NOTICE_MAX: usize = 4096;

/// A fatal proxy notification from Qlik (§4); Qlik closes the socket after it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct FatalNotice {
    pub(super) method: String,
    /// `params.message`, Qlik's text for people.
    pub(super) message: Option<String>,
}

impl FatalNotice {
    /// `OnSessionTimedOut`, `OnSessionClosed`: Qlik ended the Qlik session (inactivity, or the
    /// proxy closed it). The user's login, the gateway session, is untouched by either.
    pub(super) fn ends_qlik_session(&self) -> bool {
        matches!(
            self.method.as_str(),
            "OnSessionTimedOut" | "OnSessionClosed"
        )
    }

    /// What an operator can do about it, for the log line.
    fn hint(&self) -> &'static str {
        match self.method.as_str() {
            "OnNoEngineAvailable" => "the Qlik proxy has no engine to send the user to: check the engine service and the virtual proxy's load balancing nodes",
            "OnMaxParallelSessionsExceeded" => "the user has more Qlik sessions than Qlik allows (5 by default); each gateway session holds one, so the user is logged in on too many browsers or devices",
            "OnLicenseAccessDenied" => "the user has no Qlik Sense license access: allocate one in the QMC",
            "OnEngineWebsocketFailed" | "OnRepositoryWebsocketFailed" => "the Qlik proxy lost its connection to a Qlik service: check the Qlik services and the proxy's log",
            _ => "see the Qlik proxy's log",
        }
    }
}

/// A frame from Qlik read as a fatal notification: one of [`FATAL_NOTIFICATIONS`], or any other
/// notification with `params.severity: "fatal"`. Notifications are small; bigger frames are
/// responses and are not parsed, nor frames without a `"method"` key (most responses).
pub(super) fn fatal_notice(text: &str) -> Option<FatalNotice> {
    if text.len() > FATAL_NOTICE_MAX || !text.contains("\"method\"") {
        return None;
    }
    let v = serde_json::from_str::<serde_json::Value>(text).ok()?;
    if v.get("id").is_some() {
        return None;
    }
    let method = v.get("method")?.as_str()?;
    let fatal = FATAL_NOTIFICATIONS.contains(&method)
        || v.pointer("/params/severity").and_then(|s| s.as_str()) == Some("fatal");
    fatal.then(|| FatalNotice {
        method: method.to_string(),
        message: v
            .pointer("/params/message")
            .and_then(|m| m.as_str())
            .map(str::to_string),
    })
}

/// Follows Qlik's fatal notifications on one socket (both phases). The notification itself always
/// goes to the client unchanged; the watch logs and counts it, and when it says the Qlik session
/// ended, renews that session at once and decides how the client's socket ends.
pub(super) struct FatalWatch {
    state: Arc<AppState>,
    sid: SessionId,
    /// `DIR\id`, for the log.
    user: String,
    /// The Qlik session renewal started when Qlik said the session ended.
    renewal: Option<tokio::task::JoinHandle<Result<QlikSession, LifecycleError>>>,
}

impl FatalWatch {
    pub(super) fn new(state: Arc<AppState>, sid: SessionId, user: String) -> Self {
        FatalWatch {
            state,
            sid,
            user,
            renewal: None,
        }
    }

    /// Looks at a text frame from Qlik (on its way to the client, unchanged): logs, counts and
    /// acts on a fatal notification; does nothing for any other frame.
    pub(super) fn observe(&mut self, text: &str, qlik: &QlikSession) {
        let Some(n) = fatal_notice(text) else {
            return;
        };
        self.state.stats.fatal_notification(&n.method);
        let session = self.sid.log_tag();
        let message = n.message.as_deref().unwrap_or("");
        if n.ends_qlik_session() {
            tracing::info!(
                session = %session,
                user = %self.user,
                notification = %n.method,
                qlik_message = message,
                "Qlik ended the user's Qlik session under an open engine websocket; passing the notification on and renewing the Qlik session, so that the client's resume or reconnect needs no login"
            );
            // Renewed now rather than on the reconnect: the client's resume finds the new
            // session at once, and the decision between "reconnect" (4002) and "log in" is made
            // on the gateway session's state before the client's socket closes.
            if self.renewal.is_none() {
                let (state, sid, stale) = (self.state.clone(), self.sid.clone(), qlik.clone());
                self.renewal = Some(tokio::spawn(async move {
                    state.qlik.recreate(&sid, &stale).await
                }));
            }
        } else if n.method == "OnSessionLoggedOut" {
            // Someone ended the Qlik session at QPS (an administrator or a tool through the QPS
            // API, or the Personal API logout). Passed on with Qlik's close as is: the open page
            // shows "logged out" the way Qlik's own clients do, and enigma.js does not resume
            // after Qlik's 1000. No new Qlik session is made behind the back of whoever ended
            // this one (freeing a license, or a parallel-session slot, is a usual reason). But
            // the user did not log out of the gateway, and the gateway session is the login:
            // a reload or reconnect gets a new Qlik session without a login (the stale one is
            // renewed on the next connect), and only `POST /_gateway/logout` logs the user out.
            tracing::info!(
                session = %session,
                user = %self.user,
                notification = %n.method,
                qlik_message = message,
                "Qlik logged the user's Qlik session out (QPS API or Personal API); passing it on; the gateway session stays, so a reconnect gets a new Qlik session without a login"
            );
        } else {
            tracing::warn!(
                session = %session,
                user = %self.user,
                notification = %n.method,
                qlik_message = message,
                hint = n.hint(),
                "Qlik sent a fatal notification on an engine websocket; passing it and Qlik's close on"
            );
        }
    }

    /// How the client's socket ends after Qlik's close `f` (`None`: Qlik dropped the connection).
    /// `None` when Qlik did not say its session ended: Qlik's close is relayed as is. Otherwise
    /// it waits (bounded) for the renewal: done, the client gets
    /// [`CLOSE_QLIK_SESSION_LOST`](super::close::CLOSE_QLIK_SESSION_LOST) to resume or reconnect;
    /// the gateway session gone, the client gets the gateway's login prompt (the one case
    /// `mustAuthenticate: true` reaches it) and a normal close.
    pub(super) async fn ending(
        &mut self,
        f: &Option<CloseFrame>,
    ) -> Option<(Option<Message>, CloseFrame)> {
        let renewal = self.renewal.take()?;
        let wait = self.state.cfg.qlik.qps_timeout + Duration::from_secs(2);
        let failed = |e: &dyn std::fmt::Display| {
            tracing::warn!(session = %self.sid.log_tag(), user = %self.user, error = %e, "renewing the Qlik session after Qlik ended it failed; the client's reconnect tries again");
        };
        match tokio::time::timeout(wait, renewal).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(LifecycleError::SessionGone))) => {
                tracing::info!(session = %self.sid.log_tag(), user = %self.user, "Qlik ended the Qlik session and the gateway session has ended too; sending the client to the login");
                return Some((
                    Some(login_prompt(&self.state)),
                    close_frame_for(CloseReason::SessionEnded),
                ));
            }
            Ok(Ok(Err(e))) => failed(&e),
            Ok(Err(e)) => failed(&e),
            Err(_) => failed(&format_args!("no result within {wait:?}")),
        }
        Some((None, session_lost_close(f.clone())))
    }
}

/// [`FatalWatch::observe`] on a payload the byte relay read, when it is text.
pub(super) fn observe_bytes(fatal: &mut FatalWatch, payload: &[u8], qlik: &QlikSession) {
    if let Ok(text) = std::str::from_utf8(payload) {
        fatal.observe(text, qlik);
    }
}

#[cfg(test)]
mod tests {
    use super::super::close::{going_away, CLOSE_QLIK_SESSION_LOST};
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    #[test]
    fn recognises_qlik_ending_the_session() {
        let ends = |t: &str| fatal_notice(t).is_some_and(|n| n.ends_qlik_session());
        assert!(ends(
            r#"{"jsonrpc":"2.0","method":"OnSessionTimedOut","params":{"severity":"fatal","message":"Session timed out due to inactivity"}}"#
        ));
        assert!(ends(
            r#"{"method":"OnSessionClosed","jsonrpc":"2.0","params":{}}"#
        ));
        assert!(!ends(
            r#"{"jsonrpc":"2.0","method":"OnSessionLoggedOut","params":{}}"#
        ));
        assert!(!ends(
            r#"{"jsonrpc":"2.0","id":3,"result":{"qReturn":"OnSessionTimedOut"}}"#
        ));
        assert!(!ends("not json \"OnSessionTimedOut"));
        let f = session_lost_close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "Session timed out due to inactivity".into(),
        }));
        assert_eq!(u16::from(f.code), CLOSE_QLIK_SESSION_LOST);
        assert_eq!(f.reason.as_str(), "Session timed out due to inactivity");
        let f = session_lost_close(Some(going_away("x")));
        assert_eq!(f.code, CloseCode::Away);
    }

    #[test]
    fn reads_fatal_notifications() {
        let n = fatal_notice(
            r#"{"jsonrpc":"2.0","method":"OnLicenseAccessDenied","params":{"severity":"fatal","timestamp":"2014-01-10T08:55:17.3725148Z","message":"Access to the app is denied: No available access type"}}"#,
        )
        .expect("fatal");
        assert_eq!(n.method, "OnLicenseAccessDenied");
        assert_eq!(
            n.message.as_deref(),
            Some("Access to the app is denied: No available access type")
        );
        assert!(!n.ends_qlik_session());
        // Known names count without a severity (their params are not all documented) ...
        let n = fatal_notice(r#"{"jsonrpc":"2.0","method":"OnNoEngineAvailable","params":{}}"#)
            .expect("fatal");
        assert_eq!(n.message, None);
        // ... unknown ones by their severity.
        assert!(fatal_notice(
            r#"{"jsonrpc":"2.0","method":"OnNoRepositoryAvailable","params":{"severity":"fatal"}}"#
        )
        .is_some());
        for not_fatal in [
            r#"{"jsonrpc":"2.0","method":"OnConnected","params":{"qSessionState":"SESSION_CREATED"}}"#,
            r#"{"jsonrpc":"2.0","method":"OnSomething","params":{"severity":"warning"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"OnSessionTimedOut","params":{"severity":"fatal"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"qReturn":{"method":"OnSessionClosed"}}}"#,
        ] {
            assert_eq!(fatal_notice(not_fatal), None, "{not_fatal}");
        }
    }
}
