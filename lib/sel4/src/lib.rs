//! Typed seL4 interface.
