//! Wire types of each service's HTTP API (serde only, no logic beyond parsing).

pub mod broker;
pub mod filer;
pub mod master;
pub mod volume;
