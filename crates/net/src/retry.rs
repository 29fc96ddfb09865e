//! The one retry decision for upstream failures, made from the error's class (as Pingora's
//! `RetryType` is), so that the HTTP proxy, the engine websocket and Qlik session creation fail
//! over for the same reasons.

/// What a failed upstream call says about the node it went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// The node did not answer (refused, reset, timed out before a reply): it is taken out of
    /// rotation, and the call may go to another node.
    OtherNode,
    /// Another node would answer the same: the request, the user or the setup is the cause.
    Never,
}

/// An error that knows its [`RetryClass`].
pub trait Retryable: std::fmt::Display {
    /// The class of this failure.
    fn retry_class(&self) -> RetryClass;

    /// Whether the node that produced it should leave rotation and the call go elsewhere.
    fn is_node_failure(&self) -> bool {
        self.retry_class() == RetryClass::OtherNode
    }
}
