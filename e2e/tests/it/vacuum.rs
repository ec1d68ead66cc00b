//! Online vacuum: space given back, every live blob intact, also under SIGKILLs.
