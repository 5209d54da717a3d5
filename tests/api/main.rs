//! End-to-end tests: the real server on free ports with a temp data dir, driven by real clients.
//! One binary (modules below) so the crate links once.

mod alerts;
mod browser;
mod config;
mod crash;
mod dashboard;
mod deliveries;
mod flood;
mod grafana;
mod grpc;
mod lineage;
mod metrics;
mod migration;
mod operations;
mod probing;
mod rest;
mod security;
#[path = "../support/mod.rs"]
mod support;
mod tls;
mod upgrade;
