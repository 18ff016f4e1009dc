//! ebb's rollout engine: the pool file and its validated plan, the journal, the scheduler,
//! and the interfaces (`Balancer`, `Transport`, `Check`) that drivers implement.
//!
//! The engine knows nothing of any particular balancer or transport: it is handed a
//! [`registry::Registry`] of plug-ins (the `ebb-drivers` crate provides the real ones and
//! the `ebb` binary puts the two together; tests register fakes).

// A print that panics on a closed pipe must not come back (see clippy.toml).
#![deny(clippy::disallowed_macros)]

pub mod config;
pub mod placeholder;
pub mod plan;
pub mod registry;

pub use config::{ConfigError, ConfigErrors};
pub use plan::Plan;
pub use registry::Registry;
pub mod events;
pub mod fenced;
pub mod interfaces;
pub mod journal;
pub mod leftover;
pub mod member;
pub mod ops;
pub mod patient;
pub mod run;
#[cfg(feature = "testing")]
pub mod testing;
pub mod window;
