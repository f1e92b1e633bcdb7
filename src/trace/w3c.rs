//! w3c format (to be written).
