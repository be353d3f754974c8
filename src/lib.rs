//! ipwho: which NIC, and so which VM, owned private IP X at time T?
//!
//! Data flows one way: Azure's formats are parsed in [`azure`] into evidence,
//! the pure [`engine`] turns a NIC's evidence into claims and claims into
//! answers, [`store`] keeps evidence and claims in Postgres (it alone writes
//! SQL), [`index`] holds claims in memory for lookups, [`ingest`] takes each
//! post through them (parsed, stored, indexed) with errors of its own, and
//! [`api`] and the `ipwho` binary sit on top, answering those errors as HTTP
//! problems and command-line messages. `ARCHITECTURE.md` has the whole
//! picture and the import rules.

pub mod access;
pub mod api;
pub mod azure;
pub mod collector;
pub mod demo;
pub mod engine;
pub mod enrich;
pub mod index;
pub mod ingest;
pub mod model;
pub mod par;
pub mod store;
pub mod sync;
pub mod topology;
