//! Zero-copy shared-memory rings.
