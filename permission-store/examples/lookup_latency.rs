//! In-process Lookup latency, without D-Bus: how much of a Lookup is ours.
use std::time::Instant;
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = porthole_permission_store::Store::open(&dir.path().join("p.db"))
        .await
        .unwrap();
    for i in 0..100 {
        store
            .set_permission(
                "t",
                true,
                &format!("id{i}"),
                "a.b.c",
                vec!["x".into()],
                None,
                "",
            )
            .await
            .unwrap();
    }
    let n = 20000;
    let t = Instant::now();
    for i in 0..n {
        store.lookup("t", &format!("id{}", i % 100)).await.unwrap();
    }
    println!(
        "lookup: {:.1} us/call",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
