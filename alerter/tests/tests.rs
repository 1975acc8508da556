//! wk-alerter integration tests: one test binary, one module per concern.

mod actions;
mod app;
mod cli;
mod common;
mod dashboards;
mod deploy;
mod examples;
mod heal;
mod kapacitor;
pub mod notify;
mod package;
mod plugins;
mod remote_helper;
mod rules;
mod scheduler;
mod service;
mod status;
mod stream;
mod stream_limits;
mod tools;
mod victoria;
