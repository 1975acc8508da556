//! The webhook notifier against an HTTP server written here: body shapes (event, Slack,
//! Discord), headers, HMAC signature, retry on 5xx, no retry on 4xx.

use serde_json::json;
use wk_alerter::model::{EventKind, Level};
use wk_alerter::notify::{Router, webhook};

use super::support::{HttpSink, event, plan, plan_env, to};

/// A `[[notifiers.webhook]]` named `name` posting to `url`, then the TOML lines `more`.
fn webhook_toml(name: &str, url: &str, more: &str) -> String {
    format!("[[notifiers.webhook]]\n  name = \"{name}\"\n  url = \"{url}\"\n{more}")
}

#[tokio::test]
async fn default_body_is_the_event_signed_with_hmac_and_custom_headers() {
    let mut sink = HttpSink::start(vec![200]).await;
    let hook = webhook_toml(
        "hook",
        &sink.url("/alerts?x=1"),
        "  secret = \"${HOOK_SECRET}\"\n  [notifiers.webhook.headers]\n    Authorization = \"Bearer ${HOOK_TOKEN}\"\n",
    );
    let env = [("HOOK_SECRET", "s3cret"), ("HOOK_TOKEN", "tok")];
    let router = Router::start(plan_env(&hook, &env));
    let e = to(
        event("cpu", "web1", EventKind::Alert, Level::Critical),
        &["hook"],
    );
    router.dispatch(vec![e.clone()]);
    let req = sink.next().await;
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/alerts?x=1")
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("authorization"), Some("Bearer tok"));
    assert_eq!(req.json(), serde_json::to_value(&e).unwrap());
    // The receiver's check: HMAC-SHA256 of the raw body with the shared secret.
    let expected = webhook::signature(b"s3cret", &req.body);
    assert_eq!(
        req.header("x-watchkeeper-signature"),
        Some(expected.as_str())
    );
    assert!(expected.starts_with("sha256=") && expected.len() == 7 + 64);
    // Computed independently (RFC 2104 over SHA-256) for this body:
    assert_eq!(expected, hmac_sha256_hex(b"s3cret", &req.body));
    router.flush().await;
    assert_eq!(router.stats().notifier("hook").unwrap().sent, 1);
}

/// HMAC-SHA256 written out from RFC 2104, as a receiver in another language would.
fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize();
    format!("sha256={}", hex::encode(outer))
}

#[tokio::test]
async fn slack_and_discord_shapes() {
    let mut slack = HttpSink::start(vec![200]).await;
    let mut discord = HttpSink::start(vec![204]).await;
    let router = Router::start(plan(
        &[
            webhook_toml(
                "slack",
                &slack.url("/services/T/B/X"),
                "  format = \"slack\"\n  channel = \"#ops\"\n",
            ),
            webhook_toml(
                "discord",
                &discord.url("/api/webhooks/1/abc"),
                "  format = \"discord\"\n  username = \"watchkeeper\"\n",
            ),
        ]
        .concat(),
    ));
    let mut e = to(
        event("cpu", "<!channel>", EventKind::Alert, Level::Critical),
        &["slack", "discord"],
    );
    e.message = "@everyone <!channel> CPU high".into();
    router.dispatch(vec![e]);
    let s = slack.next().await.json();
    assert_eq!(s["text"], "@everyone &lt;!channel&gt; CPU high");
    assert_eq!(s["channel"], "#ops");
    let att = &s["attachments"][0];
    assert_eq!(att["color"], "danger");
    assert_eq!(att["title"], "cpu:host=&lt;!channel&gt;");
    assert!(att.get("text").is_none(), "details are for email bodies");
    assert_eq!(att["ts"], 1_795_000_000);
    assert_eq!(
        att["fields"][0],
        json!({"title": "Level", "value": "CRITICAL (was OK)", "short": true})
    );
    assert!(
        att["fields"]
            .as_array()
            .unwrap()
            .contains(&json!({"title": "value", "value": "93.25", "short": true}))
    );

    let d = discord.next().await.json();
    assert_eq!(d["content"], "@everyone <!channel> CPU high");
    assert_eq!(
        d["allowed_mentions"],
        json!({"parse": []}),
        "no pings from alert text"
    );
    assert_eq!(d["username"], "watchkeeper");
    let embed = &d["embeds"][0];
    assert_eq!(embed["title"], "cpu:host=<!channel>");
    assert_eq!(embed["color"], 0xE74C3C);
    assert_eq!(embed["timestamp"], "2026-11-18T11:06:40Z");
    assert!(embed.get("description").is_none());
    assert_eq!(
        embed["fields"][3],
        json!({"name": "host", "value": "<!channel>", "inline": true})
    );
    router.flush().await;
    let st = router.stats();
    assert_eq!(st.notifier("slack").unwrap().sent, 1);
    assert_eq!(st.notifier("discord").unwrap().sent, 1);
}

#[tokio::test]
async fn server_errors_are_retried_client_errors_are_not() {
    let mut flaky = HttpSink::start(vec![503, 500, 200]).await;
    let mut wrong = HttpSink::start(vec![404]).await;
    let backoff = "  backoff = \"10ms\"\n";
    let router = Router::start(plan(
        &[
            webhook_toml("flaky", &flaky.url("/"), backoff),
            webhook_toml("wrong", &wrong.url("/"), backoff),
        ]
        .concat(),
    ));
    router.dispatch(vec![to(
        event("cpu", "web1", EventKind::Alert, Level::Warning),
        &["flaky", "wrong"],
    )]);
    router.flush().await;
    for _ in 0..3 {
        flaky.next().await;
    }
    wrong.next().await;
    assert!(wrong.requests.try_recv().is_err(), "a 404 is not retried");
    let st = router.stats();
    let f = st.notifier("flaky").unwrap();
    assert_eq!((f.sent, f.retries), (1, 2));
    let w = st.notifier("wrong").unwrap();
    assert_eq!((w.failed, w.retries), (1, 0));
}

#[tokio::test]
async fn a_grouped_webhook_is_one_signed_post_per_group() {
    let mut sink = HttpSink::start(vec![200]).await;
    let router = Router::start(plan(&webhook_toml(
        "hook",
        &sink.url("/hook"),
        "  secret = \"s3cret\"\n  group_by = [\"rule\"]\n  group_wait = \"100ms\"\n",
    )));
    let events = (1..=5)
        .map(|i| {
            to(
                event("cpu", &format!("web{i}"), EventKind::Alert, Level::Critical),
                &["hook"],
            )
        })
        .collect();
    router.dispatch(events);
    router.flush().await;
    let req = sink.next().await;
    let body = req.json();
    assert_eq!(body["group"], json!({"rule": "cpu"}));
    assert_eq!(body["status"], "FIRING:5");
    assert_eq!(body["level"], "CRITICAL");
    assert_eq!(body["firing"].as_array().unwrap().len(), 5);
    assert_eq!(body["firing"][4]["id"], "cpu:host=web5");
    assert_eq!(body["resolved"], json!([]));
    assert_eq!(
        req.header("x-watchkeeper-signature"),
        Some(webhook::signature(b"s3cret", &req.body).as_str())
    );
    assert!(sink.requests.try_recv().is_err(), "one POST, not five");
}
