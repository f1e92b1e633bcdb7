//! b3 format (to be written).
