//! The broker's wire contract: topics, publish, fetch and consumer-group offsets.
