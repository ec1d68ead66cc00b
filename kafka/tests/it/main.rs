//! Integration tests of the Kafka listener: `serve` on 127.0.0.1:0 with a `MemBackend`,
//! driven by a raw client through the codec (every handler, framing, pipelining, bad input)
//! and by real clients (kcat, kafka-python, confluent-kafka).

mod clients;
mod durability;
mod groups;
mod harness;
mod protocol;
