//! wk-alerter: the Kapacitor-style alert processor. Not built yet; see docs/architecture.md.

fn main() {
    eprintln!(
        "wk-alerter is not implemented yet: this crate is a placeholder for the alert processor"
    );
    std::process::exit(2);
}
