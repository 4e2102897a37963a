//! The integration suite: one test binary (linked once), one module per area.
//! Each test starts the real server on port 0 (see `common`).

mod common;

mod agent;
mod alerts;
mod api_keys;
mod audit;
mod auth;
mod blob_urls;
mod brute_force;
mod captures;
mod command_faults;
mod commands;
mod connections;
mod contract;
mod crash;
mod device_search;
mod enrollment;
mod fleet;
mod grpc_parity;
mod hardening;
mod heartbeats;
mod ingest;
mod isolation;
mod metrics;
mod migrations;
mod models;
mod openapi;
mod query_plans;
mod quickstart;
mod rate_limits;
mod readme;
mod replicas;
mod rest_errors;
mod row_security;
mod secrets_at_rest;
mod serve_binary;
mod tls;
mod webhooks;
