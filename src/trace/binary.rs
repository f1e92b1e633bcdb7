//! binary format (to be written).
