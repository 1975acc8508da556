//! `docker` against this host's Docker daemon, when one answers on /var/run/docker.sock
//! (`docker info` works); skipped (counted) otherwise. The oracle is the docker CLI: the
//! engine's container count and CPU count, and each running container's name, image and
//! state as `docker ps` lists them.

use std::process::Command;

use super::{gather_with_errors, int};

const SOCKET: &str = "/var/run/docker.sock";

/// `docker <args>` output, or `None` when the CLI or daemon is missing.
fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn engine_and_running_containers_match_the_docker_cli() {
    if std::os::unix::net::UnixStream::connect(SOCKET).is_err() {
        wk_core::skip_platform!("no Docker daemon on {SOCKET}");
    }
    let Some(ncpu) = docker(&["info", "--format", "{{.NCPU}}"]) else {
        wk_core::skip_platform!("`docker info` fails (no docker CLI or no daemon)");
    };
    let (metrics, errors) = gather_with_errors(&format!(
        "[[inputs.docker]]\n  endpoint = \"unix://{SOCKET}\"\n  perdevice_include = [\"cpu\", \"network\", \"blkio\"]\n"
    ));
    assert!(errors.is_empty(), "{errors:?}");
    let engine = metrics
        .iter()
        .find(|m| m.name.as_ref() == "docker" && m.field("n_cpus").is_some())
        .expect("a docker engine line");
    assert_eq!(int(engine, "n_cpus").to_string(), ncpu);
    let containers = docker(&["info", "--format", "{{.Containers}}"]).unwrap();
    // The count can move between the two reads only if something starts a container.
    assert_eq!(int(engine, "n_containers").to_string(), containers);

    let ps = docker(&["ps", "--format", "{{.Names}}\t{{.ID}}"]).unwrap();
    for line in ps.lines().filter(|l| !l.is_empty()) {
        let (name, short_id) = line.split_once('\t').unwrap();
        let status = metrics
            .iter()
            .find(|m| {
                m.name.as_ref() == "docker_container_status"
                    && m.tag("container_name") == Some(name)
            })
            .unwrap_or_else(|| panic!("no docker_container_status for {name}"));
        assert_eq!(status.tag("container_status"), Some("running"));
        assert!(int(status, "pid") > 0);
        match status.field("container_id") {
            Some(wk_agent::metric::FieldValue::Str(id)) => assert!(id.starts_with(short_id)),
            other => panic!("container_id {other:?}"),
        }
        for measurement in ["docker_container_mem", "docker_container_cpu"] {
            assert!(
                metrics.iter().any(
                    |m| m.name.as_ref() == measurement && m.tag("container_name") == Some(name)
                ),
                "no {measurement} for {name}"
            );
        }
    }
}
