//! User runtime for every component.
