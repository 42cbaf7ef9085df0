//! Keelson's HTTP front: the OCI Distribution API (and Docker's dialect of it), its errors and the
//! single place where access is checked.
//!
//! The crate serves connections it is handed (a stream of accepted sockets), so the binary and
//! the simulation can give it real or simulated networks.

pub mod access;
pub mod audit;
pub mod auth;
pub mod body;
pub mod console;
pub mod error;
pub mod handlers;
pub mod health;
pub mod image_view;
pub mod lifecycle_jobs;
pub mod logins;
pub mod manifest;
pub mod markdown;
pub mod metrics;
pub mod names;
pub mod numbered;
pub mod openapi;
pub mod outbound;
pub mod placement;
pub mod proxy;
pub mod pulls;
pub mod rate_limit;
pub mod regions;
pub mod registry;
pub mod routes;
pub mod scanning;
pub mod server;
pub mod signatures;
pub mod tls;
pub mod webhooks;

pub use access::AuthMode;
pub use handlers::admin::bootstrap_redundancy;
pub use handlers::identity::bootstrap_admin;
pub use registry::{AdjustableClock, Clock, Limits, Redundancy, Registry, SystemClock};
pub use server::serve;
#[cfg(test)]
mod fuzz;
