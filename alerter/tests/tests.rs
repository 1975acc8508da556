//! wk-alerter's integration tests: one test binary, one module per concern.

mod common;
mod rules;
