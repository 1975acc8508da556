//! wk-alerter integration tests: one test binary, one module per concern.

mod actions;
mod app;
mod common;
mod examples;
mod notify;
mod rules;
mod service;
mod stream;
