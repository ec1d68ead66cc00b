//! End-to-end tests: real binaries, real processes, real files, SIGKILL and SIGTERM.
//! Build the binaries first: `cargo build --workspace --bins`.

// The suite is an outside client of Kelp (raw reqwest, as users call it), not a service.
#![allow(clippy::disallowed_methods)]

mod blob;
mod broker;
mod chaos;
mod corruption;
mod dos;
mod durability;
mod fencing;
mod filer;
mod filer_etcd;
mod ha;
mod kafka;
mod overload;
mod powercut;
mod pyseaweed;
mod registry;
mod scenarios;
mod seaweed_filer;
mod seaweed_master;
mod security;
mod server;
mod shared;
mod tracing;
mod vacuum;
