//! End-to-end test helpers (see `tests/`).
