//! ebb's rollout engine: the pool file and its validated plan, the journal, the scheduler,
//! and the interfaces (`Balancer`, `Transport`, `Check`) that drivers implement.
//!
//! The engine knows nothing of any particular balancer or transport; the `ebb-drivers`
//! crate provides them and the `ebb` binary puts the two together.

pub mod config;
pub mod duration;
pub mod placeholder;
pub mod plan;
pub mod source;

pub use config::{ConfigError, ConfigErrors};
pub use plan::Plan;
pub mod events;
pub mod interfaces;
pub mod journal;
pub mod member;
pub mod ops;
pub mod patient;
pub mod run;
#[cfg(feature = "testing")]
pub mod testing;
