//! docs/architecture.md, "Adding a plugin", followed on a throwaway input: `toy` is written
//! as step 1 says a `mod.rs` is (a `SPEC`, a `build` that only reads options, a `gather` that
//! reads /proc through `HostPaths`, a pure parser, its previous sample kept for a rate) and runs
//! through the loader and the `--test` printer the real inputs run through. The registry is a
//! static list, so the test hands the loader one of its own (`config::load_with`); the other
//! steps are checked on the real folders by registry_docs.rs, fixtures.rs and layering.rs.

use std::path::Path;

use crate::support::conf;
use wk_agent::config::{self, ConfigError, LoadRequest, Plan};
use wk_agent::daemon;
use wk_agent::hostpaths::HostPaths;
use wk_agent::inputs::InputSpec;

/// What `agent/src/inputs/toy/mod.rs` would hold.
mod toy {
    use wk_agent::hostpaths::HostPaths;
    use wk_agent::inputs::{BuildContext, GatherError, Input, InputSpec};
    use wk_agent::plugin::Accumulator;
    use wk_core::options::Options;

    /// Registry entry.
    pub const SPEC: InputSpec = InputSpec {
        name: "toy",
        description: "The walkthrough's example: one counter from /proc/toy",
        sample_config: SAMPLE,
        build,
        // `delta` needs a previous sample.
        test_twice: true,
    };

    /// Its `sample.conf` (a real input embeds the file with `include_str!`).
    const SAMPLE: &str = "# The walkthrough's example input\n[[inputs.toy]]\n  ## The `greeting` tag.\n  # greeting = \"hello\"\n";

    /// The counter of `/proc/toy` (`ticks <n>`), or the line and reason it is malformed.
    pub fn parse(text: &str) -> Result<u64, (usize, String)> {
        let line = text.lines().next().unwrap_or("");
        line.strip_prefix("ticks ")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| (1, format!("expected \"ticks <n>\", found {line:?}")))
    }

    struct Toy {
        paths: HostPaths,
        greeting: String,
        /// The previous sample, for `delta`.
        last: Option<u64>,
    }

    /// Options only, no I/O: a missing /proc/toy is the gather's error, not the config's.
    fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
        let greeting = opts.string("greeting", "hello");
        // A Telegraf option this input accepts without acting on it: a warning, not an error.
        opts.unsupported(&["colour"]);
        Box::new(Toy {
            paths: ctx.paths.clone(),
            greeting,
            last: None,
        })
    }

    impl Input for Toy {
        fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
            let text = self.paths.read_proc("toy")?;
            let ticks = parse(&text)
                .map_err(|(line, e)| GatherError::malformed(self.paths.proc("toy"), line, e))?;
            let mut m = acc
                .metric("toy")
                .with_tag("greeting", self.greeting.clone())
                .with_field("ticks", ticks);
            if let Some(last) = self.last {
                m.add_field("delta", ticks.wrapping_sub(last));
            }
            self.last = Some(ticks);
            acc.push(m);
            Ok(())
        }
    }
}

/// Step 2: the toy's registry, in place of `inputs::REGISTRY`.
static REGISTRY: &[InputSpec] = &[toy::SPEC];

/// Loads `text` with the toy registry, /proc under `root`, as `--test` does.
fn load(text: &str, root: &Path) -> Result<Plan, ConfigError> {
    let c = conf(text);
    let req = LoadRequest {
        paths: HostPaths::under(root),
        test_mode: true,
        ..LoadRequest::new(vec![c.path.clone()])
    };
    config::load_with(&req, REGISTRY)
}

/// The `--test` output of `plan`, timestamps cut off (the printer stamps the real time).
async fn test_output(plan: Plan) -> (bool, Vec<String>) {
    let mut out = Vec::new();
    let ok = daemon::test(plan, None, &mut out).await;
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(' ').map_or(l, |(head, _)| head).to_owned())
        .collect();
    (ok, lines)
}

#[tokio::test]
async fn a_toy_input_written_as_the_walkthrough_says_loads_gathers_and_prints_as_real_ones() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc")).unwrap();
    std::fs::write(root.path().join("proc/toy"), "ticks 41\n").unwrap();
    let text = "[agent]\n  omit_hostname = true\n[[inputs.toy]]\n  greeting = \"hi\"\n  colour = \"red\"\n  name_prefix = \"my_\"\n  [inputs.toy.tags]\n    env = \"test\"\n";

    // Its options are read with the common ones; an unimplemented one warns at its line.
    let plan = load(text, root.path()).unwrap_or_else(|e| panic!("{e}"));
    let warnings: Vec<String> = plan
        .warnings
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect();
    assert_eq!(
        warnings,
        ["5:12: [inputs.toy] colour: is a Telegraf option wk-agent does not implement; ignored"]
    );

    // --test gathers twice for a test_twice input; the wrapper renames and tags; fields are
    // printed sorted, uints with `u`.
    let (ok, lines) = test_output(plan).await;
    assert!(ok, "no gather error");
    assert_eq!(lines, ["> my_toy,env=test,greeting=hi delta=0u,ticks=41u"]);

    // An unknown option is an error naming the one it resembles.
    let typo = text.replace("greeting =", "greting =");
    let errors: Vec<String> = load(&typo, root.path())
        .err()
        .expect("a typo does not load")
        .errors
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect();
    assert_eq!(
        errors,
        [
            "4:3: [inputs.toy] unknown option \"greting\": Telegraf has no such option here; did you mean \"greeting\"?"
        ]
    );

    // Build does no I/O: without /proc/toy the config still loads, and the gather's error
    // names the file.
    let empty = tempfile::tempdir().unwrap();
    let plan = load(text, empty.path()).unwrap_or_else(|e| panic!("{e}"));
    let (ok, lines) = test_output(plan).await;
    assert!(!ok && lines.is_empty(), "{lines:?}");
    std::fs::create_dir_all(empty.path().join("proc")).unwrap();
    std::fs::write(empty.path().join("proc/toy"), "tocks 1\n").unwrap();
    let mut plan = load(text, empty.path()).unwrap();
    let outcome = plan.inputs[0].gather(1, &plan.global_tags);
    let errors: Vec<String> = outcome.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [format!(
            "{}:1: expected \"ticks <n>\", found \"tocks 1\"",
            empty.path().join("proc/toy").display()
        )]
    );
}

/// Step 1's pure parser, tested on literal strings as the real inputs' are.
#[test]
fn the_toy_parser_reads_its_line_and_names_a_bad_one() {
    assert_eq!(toy::parse("ticks 7\nnewer kernels add lines\n"), Ok(7));
    assert!(toy::parse("").is_err());
    assert!(toy::parse("ticks -1\n").is_err());
}

/// docs/architecture.md's "Adding a plugin" names the test that checks each step: each name
/// must still be a test, so renaming one without the doc fails here.
#[test]
fn the_walkthrough_names_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let section = doc
        .split("## Adding a plugin")
        .nth(1)
        .and_then(|s| s.split("\n# ").next())
        .expect("docs/architecture.md has an \"Adding a plugin\" section");
    let mut sources = String::new();
    let live_tests = std::fs::read_dir(root.join("agent/src/inputs"))
        .unwrap()
        .map(|e| e.unwrap().path().join("live.rs"));
    let test_dirs = ["agent/tests", "agent/tests/outputs", "alerter/tests"].into_iter();
    let test_files = test_dirs
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap())
        .map(|e| e.unwrap().path());
    for path in test_files.chain(live_tests) {
        if path.extension().is_some_and(|e| e == "rs") && path.is_file() {
            sources.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    // Test names: backticked snake_case words of three parts or more.
    let names: Vec<&str> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.matches('_').count() >= 2 && w.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .collect();
    assert!(names.len() >= 6, "{names:?}");
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| !sources.contains(&format!("fn {n}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names no such test: {missing:?}"
    );
}
