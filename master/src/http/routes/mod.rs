//! Route handlers, one module per resource: they extract, validate, call the service and map
//! the result with `?`.

pub mod cluster;
pub mod col;
pub mod dir;
pub mod ops;
pub mod submit;
pub mod vol;
