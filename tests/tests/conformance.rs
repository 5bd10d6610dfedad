//! Each standard interface we serve, checked live against upstream's XML:
//! every method, signal and property in Debian's xdg-desktop-portal-dev
//! copy must exist in our introspection with the same signature (we may add
//! members; newer upstream versions do too). The comparison is
//! `porthole_service::conformance`; its own unit tests show that a renamed
//! method, a changed argument type, a missing signal or property each fail.

use porthole_permission_store::service::{BUS_NAME, OBJECT_PATH};
use porthole_service::conformance;
use porthole_tests::{Bus, bin};

/// The Debian package that ships upstream's interface XML.
const XML_PACKAGE: &str = "xdg-desktop-portal-dev";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_permission_store_serves_upstreams_interface() {
    let reference = conformance::reference_path("org.freedesktop.impl.portal.PermissionStore");
    if !porthole_tests::anchor_present(&reference.to_string_lossy(), XML_PACKAGE) {
        return;
    }
    let bus = Bus::start();
    let mut cmd = bus.command(bin("porthole-permission-store"));
    cmd.arg("-v");
    let _store = bus.spawn_owning("permission-store", cmd, BUS_NAME).await;
    let conn = bus.connection().await;
    let mismatches = conformance::check_object(&conn, BUS_NAME, OBJECT_PATH, &reference)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        mismatches.is_empty(),
        "{BUS_NAME} at {OBJECT_PATH} does not conform to {}:\n  {}",
        reference.display(),
        mismatches
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// The portal frontend with our scripted backend behind it (its .portal
/// file from data/), one dialog held open so that both request objects
/// exist; returns the bus, the services and the held request's path.
async fn portal_with_held_dialog() -> (Bus, Vec<porthole_tests::Service>, zbus::Connection, String)
{
    const DESKTOP: &str = "org.freedesktop.portal.Desktop";
    let bus = Bus::start();
    let portals = bus.porthole_portal_dir();
    let script = bus.root().join("script");
    std::fs::write(&script, "{\"method\": \"OpenFile\", \"hold\": true}\n").unwrap();
    let mut cmd = bus.command(bin("porthole-prompt"));
    cmd.arg("--script").arg(&script);
    let prompt = bus
        .spawn_owning("prompt", cmd, porthole_prompt::BUS_NAME)
        .await;
    let mut cmd = bus.command(bin("porthole-portals"));
    cmd.env("XDG_DESKTOP_PORTAL_DIR", &portals);
    let frontend = bus.spawn_owning("portals", cmd, DESKTOP).await;
    let conn = bus.connection().await;
    let mut options = std::collections::HashMap::new();
    options.insert("handle_token", zvariant::Value::from("conformance"));
    let reply = conn
        .call_method(
            Some(DESKTOP),
            "/org/freedesktop/portal/desktop",
            Some("org.freedesktop.portal.FileChooser"),
            "OpenFile",
            &("", "t", options),
        )
        .await
        .unwrap();
    let handle: zvariant::OwnedObjectPath = reply.body().deserialize().unwrap();
    // Wait until the backend has its request object up.
    let deadline = std::time::Instant::now() + porthole_tests::START_TIMEOUT;
    loop {
        let proxy = zbus::fdo::IntrospectableProxy::builder(&conn)
            .destination(porthole_prompt::BUS_NAME)
            .unwrap()
            .path(handle.clone())
            .unwrap()
            .build()
            .await
            .unwrap();
        let xml = proxy.introspect().await.unwrap_or_default();
        if xml.contains("org.freedesktop.impl.portal.Request") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backend never showed the dialog"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (bus, vec![frontend, prompt], conn, handle.to_string())
}

fn assert_conforms(
    what: &str,
    reference: &std::path::Path,
    mismatches: Vec<conformance::Mismatch>,
) {
    assert!(
        mismatches.is_empty(),
        "{what} does not conform to {}:\n  {}",
        reference.display(),
        mismatches
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_frontend_and_the_prompt_serve_upstreams_interfaces() {
    let frontend_refs = [
        ("org.freedesktop.portal.FileChooser", false),
        ("org.freedesktop.portal.Request", true),
        ("org.freedesktop.portal.Settings", false),
        ("org.freedesktop.portal.NetworkMonitor", false),
        ("org.freedesktop.portal.OpenURI", false),
    ];
    let backend_refs = [
        ("org.freedesktop.impl.portal.FileChooser", false),
        ("org.freedesktop.impl.portal.Access", false),
        ("org.freedesktop.impl.portal.AppChooser", false),
        ("org.freedesktop.impl.portal.Request", true),
        ("org.freedesktop.impl.portal.Settings", false),
    ];
    for (iface, _) in frontend_refs.iter().chain(&backend_refs) {
        let reference = conformance::reference_path(iface);
        if !porthole_tests::anchor_present(&reference.to_string_lossy(), XML_PACKAGE) {
            return;
        }
    }
    let (_bus, _services, conn, handle) = portal_with_held_dialog().await;
    // Our own interface, against the XML we publish in data/: exactly,
    // so that the published description cannot fall behind the code.
    let ours = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/org.porthole.NetworkAccess1.xml");
    let mismatches = conformance::check_object_exact(
        &conn,
        "org.freedesktop.portal.Desktop",
        "/org/freedesktop/portal/desktop",
        &ours,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_conforms("the frontend's NetworkAccess1", &ours, mismatches);
    for (dest, refs) in [
        ("org.freedesktop.portal.Desktop", &frontend_refs[..]),
        (porthole_prompt::BUS_NAME, &backend_refs[..]),
    ] {
        for (iface, on_request) in refs {
            let path = if *on_request {
                handle.as_str()
            } else {
                "/org/freedesktop/portal/desktop"
            };
            let reference = conformance::reference_path(iface);
            let mismatches = conformance::check_object(&conn, dest, path, &reference)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_conforms(&format!("{dest} at {path}"), &reference, mismatches);
        }
    }
}
