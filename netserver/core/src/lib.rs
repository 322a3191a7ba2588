//! Net server core.
