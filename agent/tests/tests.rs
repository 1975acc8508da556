//! wk-agent integration tests: one binary (fixture cases of every input, config loading,
//! live-machine oracles, the CLI).

mod adding_an_input;
mod cli;
mod config;
mod daemon;
mod deploy;
mod docker_api;
mod fixtures;
mod layering;
mod live;
mod outputs;
mod registry_docs;
mod support;
