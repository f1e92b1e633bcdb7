//! app (to be written).
