//! ebb's built-in TCP load balancer (skeleton; see issue 3).
pub mod cli;
