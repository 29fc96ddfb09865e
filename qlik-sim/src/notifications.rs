//! The proxy messages the simulator sends on its proxy engine websockets (§4 "Fatal proxy
//! messages"), and why a proxy session ends, which decides the one its websockets get.

/// Why a session ends; decides the fatal message its websockets get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// Deleted through the QPS API or the Personal API: `OnSessionLoggedOut`.
    LoggedOut,
    /// Inactivity or `expire_*`: `OnSessionTimedOut`.
    TimedOut,
    /// Closed by the server (`notify("OnSessionClosed")`): `OnSessionClosed`.
    Closed,
}

impl SessionEnd {
    /// The message the session's websockets get.
    pub(crate) fn notification(self) -> ProxyNotification {
        let method = match self {
            SessionEnd::LoggedOut => "OnSessionLoggedOut",
            SessionEnd::TimedOut => "OnSessionTimedOut",
            SessionEnd::Closed => "OnSessionClosed",
        };
        ProxyNotification::find(method).expect("session-ending notifications are in the table")
    }
}

/// A proxy message the simulator can send on its engine websockets (§4 "Fatal proxy
/// messages").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProxyNotification {
    /// The JSON-RPC method.
    pub method: &'static str,
    /// The documented `params.message`, if the documentation gives one.
    pub message: Option<&'static str>,
    /// The proxy session ends with it.
    pub ends_session: Option<SessionEnd>,
}

/// Every notification `notify` supports, with its documented message.
const NOTIFICATIONS: [ProxyNotification; 8] = [
    ProxyNotification {
        method: "OnSessionTimedOut",
        message: Some("Session timed out due to inactivity"),
        ends_session: Some(SessionEnd::TimedOut),
    },
    ProxyNotification {
        method: "OnSessionClosed",
        message: Some("Session closed by server"),
        ends_session: Some(SessionEnd::Closed),
    },
    ProxyNotification {
        method: "OnSessionLoggedOut",
        message: Some("User logged out manually"),
        ends_session: Some(SessionEnd::LoggedOut),
    },
    ProxyNotification {
        method: "OnNoEngineAvailable",
        message: None,
        ends_session: None,
    },
    ProxyNotification {
        method: "OnMaxParallelSessionsExceeded",
        message: None,
        ends_session: None,
    },
    ProxyNotification {
        method: "OnLicenseAccessDenied",
        message: Some("Access to the app is denied: No available access type"),
        ends_session: None,
    },
    ProxyNotification {
        method: "OnEngineWebsocketFailed",
        message: Some("Connection to Qlik service failed, shutting down"),
        ends_session: None,
    },
    ProxyNotification {
        method: "OnRepositoryWebsocketFailed",
        message: Some("Connection to Qlik service failed, shutting down"),
        ends_session: None,
    },
];

impl ProxyNotification {
    /// The notification called `method` (exact spelling).
    pub(crate) fn find(method: &str) -> Option<ProxyNotification> {
        NOTIFICATIONS.iter().find(|n| n.method == method).copied()
    }

    /// The supported method names.
    pub(crate) fn methods() -> Vec<&'static str> {
        NOTIFICATIONS.iter().map(|n| n.method).collect()
    }
}
