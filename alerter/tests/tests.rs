//! wk-alerter integration tests: one test binary, one module per concern.

mod common;
mod examples;
mod notify;
mod rules;
mod service;
mod stream;
mod stream_limits;
