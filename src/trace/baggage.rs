//! baggage format (to be written).
