//! Produktly's Segment Event Cloud Source: guidance events from the browser
//! in, Segment `track` calls out, with a durable queue in between.
//!
//! Data flows one way: `ingest` (validate against the catalog, group commit)
//! → `queue` (the store plus its depth, backlog and metrics) → `store` →
//! `delivery` → `delivery::segment`. `admin` manages workspaces, their Segment
//! integration and erasure; `http` is the server, its errors, the OpenAPI
//! document, ops endpoints and the SDK file; `app` builds each area's state and
//! wires it up. `domain` holds the types every layer shares. Modules form
//! layers: none uses one that uses it back (a test checks).

pub mod activity;
pub mod admin;
pub mod app;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod queue;
pub mod secrets;
pub mod store;
pub mod telemetry;

pub use app::App;
pub use config::Settings;
