//! The Kafka wire protocol in front of a Kelp log.
//!
//! Kafka clients (librdkafka-based ones such as kcat and confluent-kafka, kafka-python,
//! aiokafka) talk to a [`Backend`] through this crate: the broker process implements the
//! trait over its partition logs, and tests use [`mem::MemBackend`].
//!
//! # Layout
//! - [`backend`]: the [`Backend`] trait, its types and errors.
//! - [`batch`]: v2 record batch headers (parse, rewrite the base offset) and records.
//! - [`idempotence`]: per-producer sequence state that backends keep per partition.
//! - [`mem`]: an in-memory [`Backend`].

#![deny(missing_docs)]

pub mod backend;
pub mod batch;
pub mod idempotence;
pub mod mem;

pub use backend::{Backend, BackendError, Durability};
