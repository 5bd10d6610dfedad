//! The benchmark's client (tests/benches/file_chooser.rs): run inside
//! `porthole run`, it makes N+1 FileChooser.OpenFile round trips (the first
//! one a warm-up), each from the call to its Response, checks that each
//! answer is a document path under /run/user/UID/doc and reads the first
//! one, and prints one JSON object: {"n", "times_us": [...], "read"}.
//! Listens for Response once for all requests (one match rule), so each
//! round trip is the portal's work, not the client's subscriptions.

use std::collections::HashMap;
use std::time::Instant;

use futures_util::StreamExt;
use zbus::MatchRule;
use zbus::message::Type;
use zvariant::{OwnedValue, Value};

const DESKTOP: &str = "org.freedesktop.portal.Desktop";
const DESKTOP_PATH: &str = "/org/freedesktop/portal/desktop";
const REQUEST: &str = "org.freedesktop.portal.Request";

/// The document's text. xdg-desktop-portal builds the URI from the
/// document store's mount point on the host, `$XDG_RUNTIME_DIR/doc`, which
/// is `/run/user/UID/doc` in a real session but a temporary directory on
/// the benchmark's private bus: such a path is read at the app's
/// `/run/user/UID/doc` instead.
fn read_document(uri: &str) -> String {
    let path = uri.trim_start_matches("file://");
    match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            path.split_once("/doc/")
                .map(|(_, rest)| format!("/run/user/{uid}/doc/{rest}"))
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_else(|| format!("error: {uri}: {e}"))
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> zbus::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let conn = zbus::Connection::session().await?;
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .interface(REQUEST)?
        .member("Response")?
        .build();
    let mut responses = zbus::MessageStream::for_match_rule(rule, &conn, Some(16)).await?;
    let sender = conn
        .unique_name()
        .map(|u| u.trim_start_matches(':').replace('.', "_"))
        .unwrap_or_default();
    let mut times = Vec::with_capacity(n);
    let mut read = String::new();
    for i in 0..=n {
        let token = format!("bench_{i}");
        let path = format!("{DESKTOP_PATH}/request/{sender}/{token}");
        let mut options: HashMap<&str, Value<'_>> = HashMap::new();
        options.insert("handle_token", Value::from(token.as_str()));
        let t = Instant::now();
        conn.call_method(
            Some(DESKTOP),
            DESKTOP_PATH,
            Some("org.freedesktop.portal.FileChooser"),
            "OpenFile",
            &("", "Bench", options),
        )
        .await?;
        let (code, results) = loop {
            let Some(msg) = responses.next().await else {
                return Err(zbus::Error::Failure("the bus went away".into()));
            };
            let msg = msg?;
            if msg.header().path().map(|p| p.as_str()) == Some(path.as_str()) {
                break msg
                    .body()
                    .deserialize::<(u32, HashMap<String, OwnedValue>)>()?;
            }
        };
        let elapsed = t.elapsed();
        let uris: Vec<String> = results
            .get("uris")
            .and_then(|v| v.try_clone().ok())
            .and_then(|v| Vec::<String>::try_from(v).ok())
            .unwrap_or_default();
        let Some(uri) = uris.first().filter(|u| code == 0 && u.contains("/doc/")) else {
            return Err(zbus::Error::Failure(format!(
                "request {i}: response {code}, uris {uris:?}"
            )));
        };
        if i == 0 {
            read = read_document(uri);
        } else {
            times.push(elapsed.as_secs_f64() * 1e6);
        }
    }
    let times: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
    println!(
        "{{\"n\": {n}, \"times_us\": [{}], \"read\": {:?}}}",
        times.join(", "),
        read
    );
    Ok(())
}
