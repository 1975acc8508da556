//! `ping` against the real iputils `ping` binary (Debian package `iputils-ping`) on loopback.
//! Without the binary the tests fail, unless WK_SKIP_SERVERS=1.
//! 100 % loss cannot be produced here (loopback answers every address in 127.0.0.0/8), so that
//! case is covered by the parser and outcome unit tests on literal iputils/busybox outputs.

use std::process::Command;

use super::{float, int};
use wk_agent::metric::FieldValue;

/// False (test skipped) only when ping is missing and WK_SKIP_SERVERS=1.
fn have_ping() -> bool {
    if Command::new("ping").arg("-V").output().is_ok() {
        return true;
    }
    if std::env::var("WK_SKIP_SERVERS").as_deref() == Ok("1") {
        eprintln!("ping not installed; skipped (WK_SKIP_SERVERS=1)");
        return false;
    }
    panic!(
        "the `ping` binary is missing: install the Debian package iputils-ping (or set WK_SKIP_SERVERS=1)"
    );
}

use super::gather_with_errors as gather;

#[test]
fn loopback_answers() {
    if !have_ping() {
        return;
    }
    let (metrics, errors) = gather(
        "[[inputs.ping]]\n  urls = [\"127.0.0.1\", \"127.0.0.2\"]\n  count = 2\n  ping_interval = 0.2\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(metrics.len(), 2);
    for (m, url) in metrics.iter().zip(["127.0.0.1", "127.0.0.2"]) {
        assert_eq!(m.name, "ping");
        assert_eq!(m.tag("url"), Some(url));
        assert_eq!(int(m, "result_code"), 0, "{m:?}");
        assert_eq!(int(m, "packets_transmitted"), 2);
        assert_eq!(int(m, "packets_received"), 2);
        assert_eq!(float(m, "percent_packet_loss"), 0.0);
        assert!(int(m, "ttl") > 0);
        let (min, avg, max) = (
            float(m, "minimum_response_ms"),
            float(m, "average_response_ms"),
            float(m, "maximum_response_ms"),
        );
        assert!(0.0 <= min && min <= avg && avg <= max, "{m:?}");
        assert!(float(m, "standard_deviation_ms") >= 0.0);
    }
}

#[test]
fn unresolvable_host_is_result_code_2_only() {
    if !have_ping() {
        return;
    }
    let (metrics, errors) = gather("[[inputs.ping]]\n  urls = [\"nonexistent.invalid\"]\n");
    assert_eq!(metrics.len(), 1);
    let m = &metrics[0];
    assert_eq!(m.tag("url"), Some("nonexistent.invalid"));
    assert_eq!(m.fields, [("result_code".into(), FieldValue::Int(2))]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("nonexistent.invalid"), "{errors:?}");
}

#[test]
fn missing_binary_is_result_code_2() {
    let (metrics, errors) =
        gather("[[inputs.ping]]\n  urls = [\"127.0.0.1\"]\n  binary = \"/nonexistent/wk-ping\"\n");
    assert_eq!(metrics.len(), 1);
    assert_eq!(
        metrics[0].fields,
        [("result_code".into(), FieldValue::Int(2))]
    );
    assert!(errors[0].contains("wk-ping"), "{errors:?}");
}
