//! The pure attribution core.
