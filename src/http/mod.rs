//! The HTTP edge: the server and its connections, the one error type and its
//! JSON answers, the OpenAPI document, the ops endpoints, the SDK file, the
//! debugger's page, who the
//! client is (behind trusted proxies) and how often it may call.

pub mod client_ip;
pub mod debugger;
pub mod error;
pub mod openapi;
pub mod ops;
pub mod rate_limit;
pub mod sdk;
pub mod server;
