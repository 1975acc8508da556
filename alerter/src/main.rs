//! wk-alerter command line (being built; see docs/rules.md).

fn main() {
    eprintln!("wk-alerter: not runnable yet (issue 4 in progress)");
    std::process::exit(2);
}
