//! What the Qlik client and the gateway above it share, and nothing that knows about either:
//! the user as Qlik knows them (whichever identity provider established them), and the error
//! every configuration check returns. A crate of its own so that the Qlik client (a crate too)
//! and the identity providers can both use these without importing each other.

pub mod config_checks;
pub mod identity;
