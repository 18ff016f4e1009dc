//! ebb's built-in TCP load balancer, with host control as Windows NLB has it.
//!
//! Members are `started` (take new connections), `draining` (no new connections; existing
//! ones go on; `stopped` by itself when the last one closes) or `stopped` (no traffic).
//! Each member has an initial state, the state it takes when it recovers from failed
//! health checks and when the balancer restarts; both states survive restarts in a state
//! file. A control API (HTTP + JSON, with Server-Sent Events for changes) lets ebb's
//! engine, the `ebb lb` commands and operators drive it; see `docs/balancer.md`.
//!
//! Embedding:
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let config = ebb_lb::LbConfig::from_pool_file("pool.toml")?;
//! let server = ebb_lb::Server::bind(config).await?;
//! println!("clients: {:?}, control: {}", server.listen_addrs(), server.control_url());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

// A print that panics on a closed pipe must not come back (see clippy.toml).
#![deny(clippy::disallowed_macros)]

pub mod allocator;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
mod control;
mod copy_loop;
#[doc(hidden)]
pub mod fuzzing;
mod health;
pub mod http_api;
mod metrics;
pub mod persist;
mod pool;
mod proxy;
mod server;
pub mod status;

pub use config::{ConfigErrors, LbConfig};
pub use server::{serve, Server};
pub use status::{Health, HostState, InitialState, MemberStatus};
