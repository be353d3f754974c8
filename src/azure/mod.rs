//! Parsers for Azure's own records. No I/O: bytes and JSON values in, domain
//! values ([`crate::model`]) and per-record errors out.

pub mod activity;
pub mod nic;
pub mod time;
