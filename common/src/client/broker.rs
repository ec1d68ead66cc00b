//! Typed client of the broker.
