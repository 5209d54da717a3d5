//! The fronts: gRPC (the engine's own API) and the REST gateway (the public API it reproduces).
//! Both are thin: they validate and translate, then call the engine.

mod dashboard;
pub mod grpc;
pub mod observed;
mod openapi;
pub mod rest;
pub mod sequences;
mod status;
pub mod wire;
