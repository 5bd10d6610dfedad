//! The files in data/ name the same bus names and binaries as the code.

use porthole_identity::KeyFile;
use porthole_permission_store_client::BUS_NAME;

fn read(name: &str) -> KeyFile {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    KeyFile::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn permission_store_activation_files_match_the_service() {
    let dbus = read("org.freedesktop.impl.portal.PermissionStore.service");
    assert_eq!(dbus.get("D-BUS Service", "Name").as_deref(), Some(BUS_NAME));
    let exec = dbus.get("D-BUS Service", "Exec").unwrap();
    assert!(exec.ends_with("/porthole-permission-store"), "{exec}");
    let unit_name = dbus.get("D-BUS Service", "SystemdService").unwrap();
    let unit = read(&unit_name);
    assert_eq!(unit.get("Service", "BusName").as_deref(), Some(BUS_NAME));
    assert_eq!(unit.get("Service", "Type").as_deref(), Some("dbus"));
    assert_eq!(unit.get("Service", "ExecStart"), Some(exec));
}

#[test]
fn document_store_activation_files_match_the_service() {
    let dbus = read("org.freedesktop.portal.Documents.service");
    let name = porthole_documents::BUS_NAME;
    assert_eq!(dbus.get("D-BUS Service", "Name").as_deref(), Some(name));
    let exec = dbus.get("D-BUS Service", "Exec").unwrap();
    assert!(exec.ends_with("/porthole-documents"), "{exec}");
    let unit_name = dbus.get("D-BUS Service", "SystemdService").unwrap();
    let unit = read(&unit_name);
    assert_eq!(unit.get("Service", "BusName").as_deref(), Some(name));
    assert_eq!(unit.get("Service", "Type").as_deref(), Some("dbus"));
    assert_eq!(unit.get("Service", "ExecStart"), Some(exec));
}
