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
