//! Writes queued together commit as one batch (group commit): each still
//! sees the writes queued before it, a failing one changes nothing, the
//! history keeps their order, and what was acknowledged is in the file when
//! it is opened again. Real SQLite in a temporary directory.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use porthole_permission_store::{Data, Store, StoreError};
use porthole_permission_store_client::HistoryFilter;

fn data(n: u32) -> Data {
    Data::from_value(&zvariant::Value::from(n)).unwrap()
}

fn apps(app: &str, perms: &[&str]) -> BTreeMap<String, Vec<String>> {
    [(
        app.to_owned(),
        perms.iter().map(|p| p.to_string()).collect(),
    )]
    .into()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// (action, id, app) of table `t`'s history, oldest first.
async fn history(store: &Store) -> Vec<(String, String, Option<String>)> {
    let filter = HistoryFilter {
        table: Some("t".into()),
        ..Default::default()
    };
    let mut rows: Vec<_> = store
        .history(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.action, r.id, r.app))
        .collect();
    rows.reverse();
    rows
}

#[tokio::test]
async fn a_batch_of_writes_applies_in_order_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("permissions.db");
    let store = Store::open(&path).await.unwrap();
    let b_expires = now() + 2;

    // Polled together on this one thread, all queue before the writer runs:
    // one batch.
    let (writes, lookup) = tokio::join!(
        join_all([
            Box::pin(store.set("t", true, "a", apps("app1", &["r"]), data(1), ""))
                as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>,
            Box::pin(store.set_permission("t", false, "a", "app2", vec!["w".into()], None, "")),
            Box::pin(store.delete("t", "a", "")),
            // The id was deleted just before, in the same batch.
            Box::pin(store.set_value("t", false, "a", data(9), "")),
            Box::pin(store.set("t", true, "a", apps("app3", &["x"]), data(2), "")),
            Box::pin(store.revoke_permissions("t", "a", "app3", vec![], "")),
            Box::pin(store.set_permission(
                "t",
                true,
                "b",
                "app1",
                vec!["r".into()],
                Some(b_expires),
                ""
            )),
        ]),
        store.lookup("t", "a"),
    );
    let ok: Vec<bool> = writes.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, true, true, false, true, true, true]);
    assert!(matches!(writes[3], Err(StoreError::IdNotFound(_))));
    assert!(writes[2].as_ref().unwrap().deleted);
    // The Lookup queued behind the writes sees all of them.
    let a = lookup.unwrap();
    assert_eq!(a.data, data(2));
    assert!(a.apps.is_empty());

    let expected: Vec<(&str, &str, Option<&str>)> = vec![
        ("data", "a", None),
        ("grant", "a", Some("app1")),
        ("grant", "a", Some("app2")),
        ("revoke", "a", Some("app1")),
        ("revoke", "a", Some("app2")),
        ("delete", "a", None),
        ("data", "a", None),
        ("grant", "a", Some("app3")),
        ("revoke", "a", Some("app3")),
        ("grant", "b", Some("app1")),
    ];
    let owned = |v: &[(&str, &str, Option<&str>)]| -> Vec<(String, String, Option<String>)> {
        v.iter()
            .map(|(a, i, p)| (a.to_string(), i.to_string(), p.map(str::to_owned)))
            .collect()
    };
    assert_eq!(history(&store).await, owned(&expected));

    // After b's grant lapses, a Set on b that names another app leaves the
    // lapsed row to the pruner, which records its expiry.
    tokio::time::sleep(std::time::Duration::from_secs_f64(
        (b_expires + 1 - now()).max(0) as f64 + 0.2,
    ))
    .await;
    let b = store
        .set("t", false, "b", apps("app4", &["y"]), data(3), "")
        .await
        .unwrap();
    assert_eq!(b.entry.permissions(), apps("app4", &["y"]));
    let pruned = store.prune_expired().await.unwrap();
    assert_eq!(pruned.len(), 1, "the lapsed grant on b was still stored");
    let tail: Vec<_> = history(&store).await.split_off(expected.len());
    assert_eq!(
        tail,
        owned(&[
            ("data", "b", None),
            ("grant", "b", Some("app4")),
            ("expire", "b", Some("app1")),
        ])
    );
    drop(store);

    // Everything acknowledged is in the file.
    let reopened = Store::open(&path).await.unwrap();
    let entries = reopened.entries("t").await.unwrap();
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(entries[0].1.data, data(2));
    assert!(entries[0].1.apps.is_empty());
    assert_eq!(entries[1].1.data, data(3));
    assert_eq!(entries[1].1.permissions(), apps("app4", &["y"]));
}
