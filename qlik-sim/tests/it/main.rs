//! qlik-sim's integration tests, linked into one test binary (`cargo test -p qlik-sim --test it`)
//! rather than one binary per file: a module per capability, sharing `common`. One module's
//! tests: `cargo test -p qlik-sim --test it engine::`.

mod common;

mod binary;
mod clients;
mod direct_engine;
mod engine;
mod gateway_client;
mod header_auth;
mod nodes;
mod notify;
mod proxy;
mod qps_api;
mod selections;
