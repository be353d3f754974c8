//! ipwho: which NIC, and so which VM, owned private IP X at time T?
//!
//! Data flows one way: Azure's formats are parsed in [`azure`] into evidence,
//! the pure [`engine`] turns a NIC's evidence into claims and claims into
//! answers, [`store`] keeps evidence and claims in Postgres, [`index`] holds
//! claims in memory for lookups, and [`api`] and the `ipwho` binary sit on top.

pub mod api;
pub mod azure;
pub mod collector;
pub mod demo;
pub mod engine;
pub mod enrich;
pub mod index;
pub mod model;
pub mod par;
pub mod service;
pub mod store;
pub mod sync;
pub mod topology;
pub mod topology_ingest;
