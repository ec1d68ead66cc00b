//! Integration tests of the Kafka listener: real clients against `serve` with a `MemBackend`.
