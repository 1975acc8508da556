//! Live-machine tests: each input checked against an outside oracle on this host
//! (`free -b`, `df`, `ss`, `nstat`, /proc itself). One file per input.
mod net;
mod netstat;
mod nstat;
