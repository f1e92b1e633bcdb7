//! jaeger format (to be written).
