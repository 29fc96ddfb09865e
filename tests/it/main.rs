//! The integration tests, linked into one test binary (`cargo test --test it`) rather than one
//! binary per file: a module per capability, all sharing the harness in `common`. One module's
//! tests: `cargo test --test it websocket::`. They run side by side in one process, so none may
//! rely on process-wide state (environment variables, a global tracing subscriber, fixed ports or
//! file names).

mod common;

mod audit_log;
mod config_cli;
// Runs the `demo` command, which builds without the simulator do not have.
#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod enigma_node;
mod enigma_resume_browser;
mod faults;
mod identity;
#[cfg(feature = "kerberos")]
mod kerberos;
#[cfg(feature = "kerberos")]
mod kerberos_browser;
#[cfg(feature = "kerberos")]
mod kerberos_disk_full;
mod limits;
mod login;
mod mashup;
mod mashup_browser;
mod mashup_dev_browser;
mod mashup_static;
mod metrics;
mod nebula_browser;
mod oidc;
mod oidc_browser;
mod oidc_failures;
mod oidc_idp;
mod proxy_http;
mod qlik_api_browser;
mod qlik_embed_browser;
mod qlik_modes;
mod qlik_nodes;
mod qps_failures;
mod request_id;
mod session_redis;
mod session_redis_sentinel;
mod shutdown;
mod slow_clients;
mod smoke;
mod tls_reload;
mod websocket;
mod websocket_notifications;
