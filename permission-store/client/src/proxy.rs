//! Proxies for both interfaces. The service's `Changed` signal arrives as
//! [`ChangedArgs`] through [`PermissionStoreProxy::receive_changed`].

use std::collections::BTreeMap;

use zvariant::OwnedValue;

use crate::history::{HistoryFilter, HistoryRecord};
use crate::listing::{AppGrant, ListEntry, TableCount};

#[zbus::proxy(
    interface = "org.freedesktop.impl.portal.PermissionStore",
    default_service = "org.freedesktop.impl.portal.PermissionStore",
    default_path = "/org/freedesktop/impl/portal/PermissionStore"
)]
pub trait PermissionStore {
    fn lookup(
        &self,
        table: &str,
        id: &str,
    ) -> zbus::Result<(BTreeMap<String, Vec<String>>, OwnedValue)>;
    fn set(
        &self,
        table: &str,
        create: bool,
        id: &str,
        app_permissions: BTreeMap<&str, Vec<&str>>,
        data: &zvariant::Value<'_>,
    ) -> zbus::Result<()>;
    fn delete(&self, table: &str, id: &str) -> zbus::Result<()>;
    fn set_value(
        &self,
        table: &str,
        create: bool,
        id: &str,
        data: &zvariant::Value<'_>,
    ) -> zbus::Result<()>;
    fn set_permission(
        &self,
        table: &str,
        create: bool,
        id: &str,
        app: &str,
        permissions: &[&str],
    ) -> zbus::Result<()>;
    fn delete_permission(&self, table: &str, id: &str, app: &str) -> zbus::Result<()>;
    fn get_permission(&self, table: &str, id: &str, app: &str) -> zbus::Result<Vec<String>>;
    fn list(&self, table: &str) -> zbus::Result<Vec<String>>;
    #[zbus(signal)]
    fn changed(
        &self,
        table: String,
        id: String,
        deleted: bool,
        data: OwnedValue,
        permissions: BTreeMap<String, Vec<String>>,
    ) -> zbus::Result<()>;
    #[zbus(property, name = "version")]
    fn version(&self) -> zbus::Result<u32>;
}

#[zbus::proxy(
    interface = "org.porthole.PermissionStore1",
    default_service = "org.freedesktop.impl.portal.PermissionStore",
    default_path = "/org/freedesktop/impl/portal/PermissionStore"
)]
pub trait PortholeStore {
    fn list_tables(&self) -> zbus::Result<Vec<TableCount>>;
    fn list_entries(&self, table: &str) -> zbus::Result<Vec<ListEntry>>;
    fn list_app(&self, app: &str) -> zbus::Result<Vec<AppGrant>>;
    fn app_known(&self, app: &str) -> zbus::Result<bool>;
    #[allow(clippy::too_many_arguments)]
    fn set_permission_with_expiry(
        &self,
        table: &str,
        create: bool,
        id: &str,
        app: &str,
        permissions: &[&str],
        expires: i64,
    ) -> zbus::Result<()>;
    fn revoke_permissions(
        &self,
        table: &str,
        id: &str,
        app: &str,
        permissions: &[&str],
    ) -> zbus::Result<Vec<String>>;
    fn reset_app(&self, app: &str) -> zbus::Result<u32>;
    fn history(&self, filter: &HistoryFilter) -> zbus::Result<Vec<HistoryRecord>>;
    #[zbus(property, name = "version")]
    fn version(&self) -> zbus::Result<u32>;
}
