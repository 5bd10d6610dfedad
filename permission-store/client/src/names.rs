//! Where the store is on the bus. The name, path and standard interface are
//! upstream's, so any client of xdg-permission-store finds ours there too.

/// The well-known name the service owns.
pub const BUS_NAME: &str = "org.freedesktop.impl.portal.PermissionStore";
/// The one object both interfaces are served on.
pub const OBJECT_PATH: &str = "/org/freedesktop/impl/portal/PermissionStore";
/// The standard interface, exactly as upstream has it.
pub const INTERFACE: &str = "org.freedesktop.impl.portal.PermissionStore";
/// Our additions (history, expiry, whole-app views), on the same object.
pub const PORTHOLE_INTERFACE: &str = "org.porthole.PermissionStore1";
