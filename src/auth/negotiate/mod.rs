//! `negotiate`: Windows Integrated Authentication done by the gateway itself: Kerberos over
//! SPNEGO (RFC 4559) against the service account's keytab, with no IIS and no Qlik Windows-auth
//! virtual proxy in the path.
//!
//! The keytab parsing, principal mapping and token reading are plain Rust and always built (so
//! `check-config` can inspect a keytab anywhere); the GSSAPI acceptor needs the `kerberos` feature.

#[cfg(feature = "kerberos")]
pub mod acceptor;
pub mod error;
#[cfg(feature = "kerberos")]
pub mod gss;
pub mod keytab;
pub mod mapping;
#[cfg(feature = "kerberos")]
mod provider;
pub mod token;

pub use error::{Failure, NegotiateError};
#[cfg(feature = "kerberos")]
pub use provider::Negotiate;
