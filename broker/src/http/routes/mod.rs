//! Handlers, one module per resource. They extract and validate, call the service, and map
//! its result; they never touch the store.

pub mod admin;
pub mod groups;
pub mod publish;
pub mod records;
pub mod topics;
