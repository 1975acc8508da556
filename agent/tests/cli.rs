//! The wk-agent binary: --test, --once, --sample-config, exit codes, the daemon's SIGHUP
//! reload and SIGTERM shutdown.
