//! Produktly's Segment Event Cloud Source: guidance events from the browser
//! in, Segment `track` calls out, with a durable queue in between.
//!
//! Data flows one way: `ingest` (validate against the `catalog`) → `committer`
//! (group commit) → `store` → `delivery` → `segment`. `admin` manages
//! workspaces, their Segment integration and erasure; `ops` serves health,
//! readiness and metrics; `state` is what handlers share; `app` wires it up.
//! `domain` holds the types every layer shares. Modules form layers: none uses
//! one that uses it back (a test checks).

pub mod admin;
pub mod app;
pub mod bench;
pub mod catalog;
pub mod client_ip;
pub mod committer;
pub mod config;
pub mod db;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod ingest;
pub mod ingest_keys;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod partner_docs;
pub mod pattern;
pub mod queue_depth;
pub mod rate_limit;
pub mod sdk;
pub mod secrets;
pub mod segment;
pub mod selection;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod time;

pub use app::App;
pub use config::Settings;
