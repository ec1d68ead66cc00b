//! The broker's integration tests: the service against an in-memory store (publish, flush,
//! fetch, recovery, failures), the router through `oneshot`, and `run` on `127.0.0.1:0`.

mod fencing;
mod helpers;
mod kafka;
mod retention;
mod router;
mod security;
mod server;
mod service;
mod shared;
mod traces;
