//! What the permission store's and permctl's tests share: starting the
//! store on a test bus, where its database lies, and running permctl.

use std::path::PathBuf;
use std::time::Duration;

use porthole_permission_store_client::BUS_NAME;
use porthole_tests::{Bus, Service, bin, run_with_timeout};

/// Starts `porthole-permission-store -v` on `bus`, once it owns its name.
pub async fn start_store(bus: &Bus) -> Service {
    let mut cmd = bus.command(bin("porthole-permission-store"));
    cmd.arg("-v");
    bus.spawn_owning("permission-store", cmd, BUS_NAME).await
}

/// The default database of `bus`'s environment.
pub fn db_path(bus: &Bus) -> PathBuf {
    bus.data_home().join("porthole/permissions.db")
}

/// Runs `permctl ARGS` in `bus`'s environment: exit code (-1 for a signal),
/// stdout, stderr.
pub fn permctl(bus: &Bus, args: &[&str]) -> (i32, String, String) {
    let mut cmd = bus.command(bin("permctl"));
    cmd.args(args);
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(20));
    (status.code().unwrap_or(-1), out, err)
}
