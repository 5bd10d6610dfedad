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

fn activation_matches(service_file: &str, bus_name: &str, binary: &str) {
    let dbus = read(service_file);
    assert_eq!(dbus.get("D-BUS Service", "Name").as_deref(), Some(bus_name));
    let exec = dbus.get("D-BUS Service", "Exec").unwrap();
    assert!(exec.ends_with(&format!("/{binary}")), "{exec}");
    let unit_name = dbus.get("D-BUS Service", "SystemdService").unwrap();
    let unit = read(&unit_name);
    assert_eq!(unit.get("Service", "BusName").as_deref(), Some(bus_name));
    assert_eq!(unit.get("Service", "Type").as_deref(), Some("dbus"));
    assert_eq!(unit.get("Service", "ExecStart"), Some(exec));
}

#[test]
fn portal_activation_files_match_the_services() {
    activation_matches(
        "org.freedesktop.portal.Desktop.service",
        porthole_portals::BUS_NAME,
        "porthole-portals",
    );
    activation_matches(
        "org.freedesktop.impl.portal.desktop.porthole.service",
        porthole_prompt::BUS_NAME,
        "porthole-prompt",
    );
}

#[test]
fn the_portal_file_names_the_prompt_and_what_it_serves() {
    let portal = read("porthole.portal");
    assert_eq!(
        portal.get("portal", "DBusName").as_deref(),
        Some(porthole_prompt::BUS_NAME)
    );
    let interfaces = portal.get_list("portal", "Interfaces").unwrap();
    assert_eq!(
        interfaces,
        [
            "org.freedesktop.impl.portal.FileChooser",
            "org.freedesktop.impl.portal.AppChooser",
            "org.freedesktop.impl.portal.Access",
            "org.freedesktop.impl.portal.Settings"
        ]
    );
    assert_eq!(
        portal.get_list("portal", "UseIn").unwrap(),
        ["porthole"],
        "UseIn matches porthole-portals.conf's desktop"
    );
    let conf = read("porthole-portals.conf");
    assert_eq!(conf.get_list("preferred", "default").unwrap(), ["porthole"]);
}

#[test]
fn document_store_activation_files_match_the_service() {
    activation_matches(
        "org.freedesktop.portal.Documents.service",
        porthole_documents::BUS_NAME,
        "porthole-documents",
    );
}
