//! The same client requests against the real SeaweedFS filer and against Kelp's filer.
