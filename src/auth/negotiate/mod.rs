//! `negotiate`: Windows Integrated Authentication done by the gateway itself: Kerberos over
//! SPNEGO (RFC 4559) against the service account's keytab, with no IIS and no Qlik Windows-auth
//! virtual proxy in the path.
//!
//! The keytab parsing, principal mapping and token reading are plain Rust and always built (so
//! `check-config` can inspect a keytab anywhere); the GSSAPI acceptor needs the `kerberos` feature.

#[cfg(feature = "kerberos")]
pub(crate) mod acceptor;
pub(crate) mod error;
#[cfg(feature = "kerberos")]
pub(crate) mod gss;
pub(crate) mod keytab;
pub(crate) mod mapping;
#[cfg(feature = "kerberos")]
mod provider;
// Read only by the provider, which needs the GSSAPI binding.
#[cfg(feature = "kerberos")]
pub(crate) mod token;

pub(crate) use error::NegotiateError;
#[cfg(feature = "kerberos")]
pub(crate) use provider::Negotiate;
