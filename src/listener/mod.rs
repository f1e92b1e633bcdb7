//! listener (to be written).
