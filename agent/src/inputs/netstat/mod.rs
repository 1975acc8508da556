//! `[[inputs.netstat]]`: not implemented yet (being written).

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::config::Options;
use crate::metric::Accumulator;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "netstat",
    description: "TODO",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

struct Stub;

fn build(_opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Stub)
}

impl Input for Stub {
    fn gather(&mut self, _acc: &mut Accumulator) -> Result<(), GatherError> {
        Ok(())
    }
}
