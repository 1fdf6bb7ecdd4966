//! Switchyard: a webhook integration gateway.
//!
//! A webhook takes one path through the crate:
//!
//! - [`ingest`] (public listener) verifies the sender's signature and answers
//!   only once the event is durably queued;
//! - [`queue`] holds all state in Redis;
//! - [`delivery`] workers take jobs from the queue to destinations, with
//!   retries, backoff, per-destination limits and circuit breakers;
//! - [`admin`] (admin listener) serves probes and, for ops, the admin API.
//!
//! [`config`] loads and validates the TOML configuration, [`telemetry`] sets up
//! logging, and [`server::run`] wires everything together. `main.rs` and
//! [`cli`] are thin: they parse arguments and call into the library, so tests
//! run a real gateway in-process on `127.0.0.1:0`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod alerts;
pub mod api_error;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod housekeeping;
pub mod ingest;
mod listener;
pub mod queue;
pub mod replays;
pub mod server;
pub mod signature;
pub mod telemetry;

pub use server::{Listeners, ServerError, run};
