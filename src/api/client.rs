//! The HTTP API client `outagectl` uses (being written).
