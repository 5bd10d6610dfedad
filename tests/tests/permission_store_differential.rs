//! Differential test: the same sequence of calls against Debian's
//! `xdg-permission-store` and ours, each on its own private bus, must give
//! the same answers, the same errors and the same `Changed` signals.
//!
//! Deliberate differences are kept out of the common script and tested on
//! their own at the end (table names that are not valid file names).

use std::collections::BTreeMap;

use std::time::Duration;

use futures_util::StreamExt;
use porthole_permission_store_client::PermissionStoreProxy;
use porthole_permission_store_client::{BUS_NAME, OBJECT_PATH};
use porthole_tests::{Bus, Service, bin, call_error_name};
use zvariant::{ObjectPath, Signature, Value};

const ANCHOR: &str = "/usr/libexec/xdg-permission-store";
const IFACE: &str = "org.freedesktop.impl.portal.PermissionStore";

async fn start(bus: &Bus, anchor: bool) -> Service {
    let mut cmd = if anchor {
        bus.command(ANCHOR)
    } else {
        bus.command(bin("porthole-permission-store"))
    };
    cmd.arg("--replace");
    bus.spawn_owning(if anchor { "anchor" } else { "ours" }, cmd, BUS_NAME)
        .await
}

fn outcome<T: std::fmt::Debug>(r: zbus::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(zbus::Error::MethodError(name, msg, _)) => {
            format!("error {name}: {}", msg.unwrap_or_default())
        }
        Err(e) => format!("transport error {e}"),
    }
}

/// Calls a method with an arbitrary body, so wrong types can be sent.
async fn raw<B>(conn: &zbus::Connection, method: &str, body: &B) -> String
where
    B: serde::Serialize + zvariant::DynamicType,
{
    match call_error_name(conn, BUS_NAME, OBJECT_PATH, IFACE, method, body).await {
        None => "ok".to_owned(),
        Some(name) => format!("error {name}"),
    }
}

fn lookup_text(r: zbus::Result<(BTreeMap<String, Vec<String>>, zvariant::OwnedValue)>) -> String {
    outcome(r.map(|(p, d)| (p, Value::from(d))))
}

/// The script: every method, creation and replacement rules, NotFound in
/// each method, odd ids and data values, and wrong argument types.
async fn script(conn: &zbus::Connection) -> Vec<String> {
    let ps = PermissionStoreProxy::new(conn).await.unwrap();
    let mut out = Vec::new();
    let list = |ids: zbus::Result<Vec<String>>| {
        outcome(ids.map(|mut v| {
            v.sort();
            v
        }))
    };
    out.push(format!("version {:?}", ps.version().await.ok()));
    out.push(lookup_text(ps.lookup("t1", "a").await));
    out.push(list(ps.list("t1").await));
    out.push(outcome(
        ps.set_permission("t1", false, "a", "org.app.One", &["x"])
            .await,
    ));
    out.push(outcome(
        ps.set_permission("t1", true, "a", "org.app.One", &["x", "y"])
            .await,
    ));
    out.push(lookup_text(ps.lookup("t1", "a").await));
    out.push(outcome(ps.get_permission("t1", "a", "org.app.One").await));
    out.push(outcome(ps.get_permission("t1", "a", "org.app.Two").await));
    out.push(outcome(
        ps.get_permission("t1", "nope", "org.app.One").await,
    ));

    let apps: BTreeMap<&str, Vec<&str>> = [
        ("org.app.One", vec!["p"]),
        ("org.app.Two", vec!["q", "r"]),
        ("", vec!["h"]),
    ]
    .into();
    out.push(outcome(
        ps.set("t1", true, "b", apps, &Value::from((1i32, "s")))
            .await,
    ));
    let apps: BTreeMap<&str, Vec<&str>> = [("org.app.Three", vec!["r"])].into();
    out.push(outcome(
        ps.set("t1", false, "b", apps.clone(), &Value::from("str"))
            .await,
    ));
    out.push(outcome(
        ps.set("t1", false, "zz", apps, &Value::from("str")).await,
    ));
    out.push(lookup_text(ps.lookup("t1", "b").await));

    out.push(outcome(
        ps.set_value("t1", false, "a", &Value::from(5u64)).await,
    ));
    out.push(outcome(
        ps.set_value("t1", true, "c", &Value::from(vec![1i32, 2]))
            .await,
    ));
    out.push(outcome(
        ps.set_value("t1", false, "zz", &Value::from(1u8)).await,
    ));
    out.push(lookup_text(ps.lookup("t1", "a").await));
    out.push(lookup_text(ps.lookup("t1", "c").await));

    out.push(outcome(
        ps.delete_permission("t1", "b", "org.app.Three").await,
    ));
    out.push(outcome(
        ps.delete_permission("t1", "b", "org.app.Nobody").await,
    ));
    out.push(outcome(
        ps.delete_permission("t1", "nope", "org.app.One").await,
    ));
    out.push(lookup_text(ps.lookup("t1", "b").await));

    out.push(outcome(
        ps.set_permission("t1", false, "a", "org.app.One", &[])
            .await,
    ));
    out.push(lookup_text(ps.lookup("t1", "a").await));
    let apps: BTreeMap<&str, Vec<&str>> =
        [("org.app.Empty", vec![]), ("org.app.Full", vec!["f"])].into();
    out.push(outcome(
        ps.set("t2", true, "x", apps, &Value::from(1u8)).await,
    ));
    out.push(lookup_text(ps.lookup("t2", "x").await));
    out.push(outcome(
        ps.set_permission("t2", true, "y", "org.app.One", &[]).await,
    ));
    out.push(lookup_text(ps.lookup("t2", "y").await));

    out.push(outcome(ps.delete("t1", "a").await));
    out.push(outcome(ps.delete("t1", "a").await));
    out.push(list(ps.list("t1").await));
    out.push(list(ps.list("t2").await));
    out.push(list(ps.list("never-used").await));

    // Odd ids and data values.
    let huge = "h".repeat(100_000);
    for id in [
        huge.as_str(),
        "",
        "with space\nand newline",
        "ünïcødé",
        "../../etc/passwd",
    ] {
        out.push(outcome(
            ps.set_permission("odd", true, id, "org.app.One", &["p"])
                .await,
        ));
        out.push(lookup_text(ps.lookup("odd", id).await).replace(&huge, "<huge>"));
    }
    let mut dict: std::collections::HashMap<&str, Value<'_>> = std::collections::HashMap::new();
    dict.insert("k", Value::from(2.5f64));
    let path = ObjectPath::try_from("/a/b").unwrap();
    let sig = Signature::try_from("a{sv}").unwrap();
    for data in [
        Value::from(dict),
        Value::from(Vec::<String>::new()),
        Value::from((true, -3i16, u64::MAX, path)),
        Value::from(sig),
        Value::Value(Box::new(Value::from("nested"))),
    ] {
        out.push(outcome(ps.set_value("data", true, "d", &data).await));
        out.push(lookup_text(ps.lookup("data", "d").await));
    }

    // Wrong argument types and counts.
    out.push(raw(conn, "Lookup", &(1u32, true)).await);
    out.push(raw(conn, "Lookup", &("only-one",)).await);
    out.push(
        raw(
            conn,
            "SetPermission",
            &("t", "true", "id", "app", vec!["x"]),
        )
        .await,
    );
    out.push(raw(conn, "List", &()).await);
    out.push(raw(conn, "NoSuchMethod", &()).await);
    out
}

async fn run_side(anchor: bool) -> (Vec<String>, Vec<String>) {
    let bus = Bus::start();
    let _service = start(&bus, anchor).await;
    let conn = bus.connection().await;
    let ps = PermissionStoreProxy::new(&conn).await.unwrap();
    let mut changed = ps.receive_changed().await.unwrap();
    let results = script(&conn).await;
    let mut signals = Vec::new();
    while let Ok(Some(sig)) = tokio::time::timeout(Duration::from_millis(300), changed.next()).await
    {
        let a = sig.args().unwrap();
        let data = Value::from(a.data.try_clone().unwrap());
        signals.push(format!(
            "{} {} {} {:?} {:?}",
            a.table,
            a.id.replace(&"h".repeat(100_000), "<huge>"),
            a.deleted,
            data,
            a.permissions
        ));
    }
    (results, signals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_answers_like_xdg_permission_store() {
    if !porthole_tests::anchor_present(ANCHOR, "xdg-desktop-portal") {
        return;
    }
    let (theirs, their_signals) = run_side(true).await;
    let (ours, our_signals) = run_side(false).await;
    assert_eq!(theirs.len(), ours.len());
    let mut diffs = Vec::new();
    for (i, (t, o)) in theirs.iter().zip(&ours).enumerate() {
        if t != o {
            diffs.push(format!("step {i}:\n  anchor: {t}\n  ours:   {o}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert_eq!(
        their_signals.len(),
        our_signals.len(),
        "Changed count\nanchor: {their_signals:#?}\nours: {our_signals:#?}"
    );
    for (t, o) in their_signals.iter().zip(&our_signals) {
        assert_eq!(t, o, "Changed signal");
    }
    // The script must have exercised both successes and each error kind.
    let joined = ours.join("\n");
    for needle in [
        "org.freedesktop.portal.Error.NotFound",
        "org.freedesktop.DBus.Error.InvalidArgs",
        "org.freedesktop.DBus.Error.UnknownMethod",
    ] {
        assert!(joined.contains(needle), "script never produced {needle}");
    }
    assert!(
        our_signals.len() > 20,
        "only {} Changed signals",
        our_signals.len()
    );
}

/// The one deliberate difference: upstream turns a table name into a file
/// name unchecked ("" or "a/b" give `Failed: Unable to load db file` or an
/// empty table); we refuse such names with `InvalidArgument`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_table_names_are_a_documented_difference() {
    if !porthole_tests::anchor_present(ANCHOR, "xdg-desktop-portal") {
        return;
    }
    for (anchor, expected) in [
        (true, "org.freedesktop.portal.Error.Failed"),
        (false, "org.freedesktop.portal.Error.InvalidArgument"),
    ] {
        let bus = Bus::start();
        let _s = start(&bus, anchor).await;
        let conn = bus.connection().await;
        let ps = PermissionStoreProxy::new(&conn).await.unwrap();
        let got = outcome(
            ps.set_permission("", true, "id", "org.app.One", &["x"])
                .await,
        );
        assert!(
            got.starts_with(&format!("error {expected}")),
            "anchor={anchor}: {got}"
        );
    }
}
