//! `firewall_rules`: lists the firewall rules that mention a port, from each of nft,
//! iptables and ufw that answers (an empty nft ruleset says nothing of rules loaded with
//! iptables-legacy), changing nothing.

use super::{Action, ArgKind, ArgSpec, Args, BoxFuture, Ctx, Done};

/// Registry entry.
pub const SPEC: super::ActionSpec = super::ActionSpec::new(
    "firewall_rules",
    "List the firewall rules for a port (each of nft, iptables and ufw that answers); changes nothing",
    &[ArgSpec::required("port", ArgKind::Port)],
    build,
)
.as_diagnosis();

fn build(a: &Args) -> Box<dyn Action> {
    Box::new(FirewallRules {
        port: a.get("port").and_then(|p| p.parse().ok()).unwrap_or(0),
    })
}

/// The action.
pub struct FirewallRules {
    pub port: u16,
}

/// The tools tried, in order, with their listing argv.
pub const TOOLS: &[(&str, &[&str])] = &[
    ("nft", &["nft", "list", "ruleset"]),
    ("iptables", &["iptables", "-S"]),
    ("ufw", &["ufw", "status", "numbered"]),
];

/// The lines of a listing that mention `port` (as a whole number: `dport 80`, `--dport 80`,
/// `80/tcp`, `80,443`), with nft's chain/table headers kept for context.
pub fn rules_for_port(text: &str, port: u16) -> Vec<String> {
    let p = port.to_string();
    let mut out = Vec::new();
    let mut header = String::new();
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with("table ") || t.starts_with("chain ") {
            header = t.trim_end_matches('{').trim().to_owned();
        }
        let mentions = t.split(|c: char| !c.is_ascii_digit()).any(|w| w == p);
        if mentions {
            if header.is_empty() {
                out.push(t.to_owned());
            } else {
                out.push(format!("[{header}] {t}"));
            }
        }
    }
    out
}

impl Action for FirewallRules {
    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Done> {
        Box::pin(async move {
            let mut d = Done {
                ok: false,
                ..Done::default()
            };
            // Every tool that answers: an empty nft ruleset says nothing of rules loaded
            // with iptables-legacy, nor ufw of either.
            let mut tried = Vec::new();
            let mut found = Vec::new();
            for (name, argv) in TOOLS {
                let o = ctx.cmd(argv).await;
                d.commands.push(o.argv.clone());
                if !o.ok() {
                    tried.push(format!("{name}: {}", o.excerpt(200)));
                    continue;
                }
                d.ok = true;
                d.exit_status = o.code;
                let rules = rules_for_port(&o.stdout, self.port);
                found.push(if rules.is_empty() {
                    format!("{name}: no rule mentions port {}", self.port)
                } else {
                    format!("{name} rules for port {}:\n{}", self.port, rules.join("\n"))
                });
            }
            if !d.ok {
                d.stderr = format!("no firewall tool answered: {}", tried.join("; "));
                d.did = "nothing (no nft, iptables or ufw)".into();
                return d;
            }
            d.before = found.join("\n");
            d.did = "reported (nothing changed)".into();
            d
        })
    }

    fn plan(&self) -> Vec<String> {
        vec![format!(
            "list nft / iptables / ufw rules for port {}",
            self.port
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_port_in_recorded_listings() {
        let nft = rules_for_port(include_str!("testdata/nft_ruleset.txt"), 80);
        assert_eq!(nft, ["[chain input] tcp dport { 80, 443 } accept"]);
        let ipt = rules_for_port(include_str!("testdata/iptables_S.txt"), 8080);
        assert_eq!(ipt, ["-A INPUT -p tcp -m tcp --dport 8080 -j DROP"]);
        let ufw = rules_for_port(include_str!("testdata/ufw_status.txt"), 443);
        assert_eq!(
            ufw,
            ["[ 2] 443/tcp                    ALLOW IN    Anywhere"]
        );
        assert!(rules_for_port("tcp dport 8080 accept", 80).is_empty());
    }
}
