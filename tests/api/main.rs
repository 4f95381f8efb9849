//! The service's tests, in one binary (one link of the service instead of one
//! per file): each module is an area, over the shared harness in `common`. They
//! run the real service on a port (in this process, or as a child process) over
//! a real database, against a mock Segment that speaks HTTP.

#[macro_use]
mod common;

mod admin;
mod browser;
mod citus;
mod data_protection;
mod debugger;
mod delivery;
mod docs_tables;
mod end_to_end;
mod event_selection;
mod failover;
mod fairness;
mod faults;
mod hostile;
mod identity;
mod ingest_rejections;
mod instances;
mod layering;
mod openapi;
mod ops_kit;
mod secrets;
mod segment_incidents;
mod slow_connections;
mod startup;
mod store_conformance;
