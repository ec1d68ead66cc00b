//! Route handlers, one module per resource: they extract, validate, call the service and map
//! the result.

pub mod files;
pub mod meta;
pub mod ops;
