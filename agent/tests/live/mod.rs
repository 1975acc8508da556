//! Live-machine tests: each input checked against an outside oracle on this host
//! (`free -b`, `df`, `ss`, `nstat`, /proc itself). One file per input.

mod disk;
mod diskio;
mod http_response;
mod kernel;
mod mem;
mod net;
mod net_response;
mod netstat;
mod nstat;
mod ping;
mod processes;
mod swap;
mod system;

use std::path::PathBuf;

use wk_agent::config::{self, LoadRequest, Plan};
use wk_agent::hostpaths::HostPaths;

/// Loads config files for a live test: this machine's real /proc and /sys, `--test` mode,
/// no environment variables.
pub fn load(configs: Vec<PathBuf>) -> Plan {
    let no_env = |_: &str| None;
    let req = LoadRequest {
        configs,
        config_dirs: vec![],
        input_filter: None,
        output_filter: None,
        env: &no_env,
        paths: HostPaths::default(),
        test_mode: true,
        stats: Default::default(),
    };
    config::load(&req).unwrap_or_else(|e| panic!("{:?}", e.errors))
}
