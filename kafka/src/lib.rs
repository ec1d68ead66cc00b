//! The Kafka wire protocol in front of a Kelp log.
//!
//! Kafka clients (librdkafka-based ones such as kcat and confluent-kafka, kafka-python,
//! aiokafka) talk to a [`Backend`] through this crate: the broker process implements the
//! trait over its partition logs and calls [`serve`]; tests use [`mem::MemBackend`].
//!
//! # Layout
//! - [`backend`]: the [`Backend`] trait, its types and errors.
//! - [`batch`]: v2 record batches: headers (parse, rewrite the base offset) and records
//!   (encode one batch, decode any).
//! - [`idempotence`]: per-producer sequence state that backends keep per partition.
//! - [`mem`]: an in-memory [`Backend`].
//! - [`config`]: the listener settings, [`KafkaConfig`].
//! - [`server`]: [`serve`], connections, request pipelining.
//! - [`codec`]: framing and request/response headers (bodies by `kafka-protocol`).
//! - [`handlers`]: one module per api family; [`handlers::SUPPORTED`] lists the versions.
//! - [`group`]: the consumer group coordinator.
//! - [`error`]: Kafka error codes and the mapping of [`BackendError`].

#![deny(missing_docs)]

pub mod backend;
pub mod batch;
pub mod codec;
pub mod config;
pub mod error;
pub mod group;
pub mod handlers;
pub mod idempotence;
pub mod mem;
pub mod sasl;
pub mod server;

pub use backend::{Backend, BackendError, Durability};
pub use config::KafkaConfig;
pub use mem::MemBackend;
pub use server::serve;
