//! The document store over a real dbus-daemon, the real permission store
//! and the real kernel FUSE mount: documents added, read through the
//! host's view (`doc/ID/NAME`) and an app's (`doc/by-app/APP/ID/NAME`),
//! grants and revocations seen at once, safe save, restarts of both
//! services, sandboxed callers (a `.flatpak-info` in a bubblewrap root,
//! python3-dbus as an independent client) and hostile input.
//!
//! Root only (CI runs as root): the service mounts FUSE directly and the
//! sandboxed callers need bubblewrap's namespaces.

mod store_common;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use porthole_permission_store_client::PermissionStoreProxy;
use porthole_service::conformance;
use porthole_tests::process::without_capabilities;
use porthole_tests::{Bus, Service, bin, run_with_timeout};
use store_common::{db_path, permctl, start_store};
use zvariant::{Fd, OwnedValue};

use porthole_documents::{BUS_NAME as DOCS_NAME, OBJECT_PATH as DOCS_PATH};
const APP: &str = "org.example.Reader";
const OTHER: &str = "org.example.Other";

#[zbus::proxy(
    interface = "org.freedesktop.portal.Documents",
    default_service = "org.freedesktop.portal.Documents",
    default_path = "/org/freedesktop/portal/documents"
)]
trait Documents {
    fn get_mount_point(&self) -> zbus::Result<Vec<u8>>;
    fn add(
        &self,
        o_path_fd: Fd<'_>,
        reuse_existing: bool,
        persistent: bool,
    ) -> zbus::Result<String>;
    fn add_named(
        &self,
        o_path_parent_fd: Fd<'_>,
        filename: &[u8],
        reuse_existing: bool,
        persistent: bool,
    ) -> zbus::Result<String>;
    fn add_full(
        &self,
        o_path_fds: &[Fd<'_>],
        flags: u32,
        app_id: &str,
        permissions: &[&str],
    ) -> zbus::Result<(Vec<String>, HashMap<String, OwnedValue>)>;
    fn add_named_full(
        &self,
        o_path_fd: Fd<'_>,
        filename: &[u8],
        flags: u32,
        app_id: &str,
        permissions: &[&str],
    ) -> zbus::Result<(String, HashMap<String, OwnedValue>)>;
    fn grant_permissions(
        &self,
        doc_id: &str,
        app_id: &str,
        permissions: &[&str],
    ) -> zbus::Result<()>;
    fn revoke_permissions(
        &self,
        doc_id: &str,
        app_id: &str,
        permissions: &[&str],
    ) -> zbus::Result<()>;
    fn delete(&self, doc_id: &str) -> zbus::Result<()>;
    fn lookup(&self, filename: &[u8]) -> zbus::Result<String>;
    fn info(&self, doc_id: &str) -> zbus::Result<(Vec<u8>, HashMap<String, Vec<String>>)>;
    fn list(&self, app_id: &str) -> zbus::Result<HashMap<String, Vec<u8>>>;
    fn get_host_paths(&self, doc_ids: &[&str]) -> zbus::Result<HashMap<String, Vec<u8>>>;
    #[zbus(property, name = "version")]
    fn version(&self) -> zbus::Result<u32>;
}

/// AddFull's persistent flag.
const PERSISTENT: u32 = 2;

/// The error name of a failed call.
fn err_name<T: std::fmt::Debug>(r: zbus::Result<T>) -> String {
    match r {
        Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
        other => panic!("expected a D-Bus error, got {other:?}"),
    }
}

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    match r {
        Err(e) => e.raw_os_error().unwrap_or(-1),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// The errno with which a process holding no capabilities (an app, or any
/// user's process) fails to open `path` with `opts`.
fn app_open_errno(path: &Path, opts: &OpenOptions) -> i32 {
    let (path, opts) = (path.to_owned(), opts.clone());
    without_capabilities(move || errno(opts.open(&path)))
}

/// Root passes over the modes at open (the kernel opens without asking the
/// service), but nothing it writes reaches the file, and truncating at
/// open is refused.
fn assert_root_cannot_write(path: &Path) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    assert_eq!(errno(f.write_all(b"overwritten")), libc::EACCES);
    assert_eq!(
        errno(OpenOptions::new().write(true).truncate(true).open(path)),
        libc::EACCES
    );
}

/// The documents service, the store and a client, on a private bus.
/// Fields drop in order: client, documents (SIGTERM: unmounts), store, bus.
struct Docs {
    proxy: DocumentsProxy<'static>,
    conn: zbus::Connection,
    docs: Service,
    store: Service,
    bus: Bus,
}

/// Whether the real parts are here: root (the service mounts FUSE itself,
/// and the sandboxed callers need namespaces), /dev/fuse, bubblewrap.
fn can_run(test: &str) -> bool {
    if !porthole_tests::running_as_root(test) {
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        porthole_tests::skipped(&format!("{test}: no /dev/fuse (modprobe fuse)"));
        return false;
    }
    porthole_tests::anchor_present("/usr/bin/bwrap", "bubblewrap")
}

/// [`can_run`], plus Debian's python3 with its D-Bus bindings, which the
/// sandboxed client uses (an implementation independent of ours).
fn can_run_sandboxed_client(test: &str) -> bool {
    if !can_run(test) {
        return false;
    }
    let found = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import dbus"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        porthole_tests::skipped(&format!(
            "{test}: /usr/bin/python3 cannot import dbus (apt-get install python3-dbus)"
        ));
    }
    found
}

async fn start_docs(bus: &Bus, args: &[&str]) -> Service {
    let mut cmd = bus.command(bin("porthole-documents"));
    cmd.arg("-v").args(args);
    bus.spawn_owning("documents", cmd, DOCS_NAME).await
}

impl Docs {
    async fn start() -> Docs {
        Docs::start_with(&[]).await
    }

    /// With extra arguments for `porthole-documents`.
    async fn start_with(args: &[&str]) -> Docs {
        let bus = Bus::start();
        fs::create_dir_all(bus.root().join("files")).unwrap();
        let store = start_store(&bus).await;
        let docs = start_docs(&bus, args).await;
        let conn = bus.connection().await;
        let proxy = DocumentsProxy::new(&conn).await.unwrap();
        Docs {
            proxy,
            conn,
            docs,
            store,
            bus,
        }
    }

    fn mount(&self) -> PathBuf {
        self.bus.runtime_dir().join("doc")
    }

    fn files(&self) -> PathBuf {
        self.bus.root().join("files")
    }

    /// A host file with `content`, for export.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.files().join(name);
        fs::write(&p, content).unwrap();
        p
    }

    fn host_view(&self, id: &str, name: &str) -> PathBuf {
        self.mount().join(id).join(name)
    }

    fn app_view(&self, app: &str, id: &str, name: &str) -> PathBuf {
        self.mount().join("by-app").join(app).join(id).join(name)
    }

    /// Exports `path` from the host, persistent, granting `app` `perms`.
    async fn export(&self, path: &Path, app: &str, perms: &[&str]) -> String {
        let f = File::open(path).unwrap();
        let (ids, extra) = self
            .proxy
            .add_full(&[Fd::from(f.as_fd())], PERSISTENT, app, perms)
            .await
            .unwrap();
        let mp: Vec<u8> = extra["mountpoint"].try_clone().unwrap().try_into().unwrap();
        let mut want = self.mount().into_os_string().into_encoded_bytes();
        want.push(0);
        assert_eq!(mp, want, "extra_out mountpoint");
        assert_eq!(ids.len(), 1);
        ids.into_iter().next().unwrap()
    }

    /// Stops the documents service with `sig`; it must exit 0 within a
    /// second and leave no mount behind.
    fn stop_docs(&mut self, sig: i32) {
        let started = Instant::now();
        let status = self.docs.stop_with(sig).expect("documents was running");
        assert!(status.success(), "{status}:\n{}", self.docs.log_text());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(!is_mounted(&self.mount()), "still mounted after exit");
    }

    /// Runs the python3-dbus client inside a bubblewrap sandbox whose
    /// `/.flatpak-info` names `app`, with `ops` (JSON); returns its results.
    fn sandboxed(&self, app: &str, ops: serde_json::Value) -> Vec<serde_json::Value> {
        let mut cmd = self.sandboxed_command(app, ops);
        let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(30));
        assert!(status.success(), "sandboxed client failed: {out}{err}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"))
    }

    /// The python3-dbus client in a sandbox naming `app`, not yet started.
    fn sandboxed_command(&self, app: &str, ops: serde_json::Value) -> std::process::Command {
        let script = self.bus.root().join("client.py");
        fs::write(&script, CLIENT_PY).unwrap();
        let info = self.bus.root().join(format!("info-{app}"));
        fs::write(
            &info,
            format!("[Application]\nname={app}\n\n[Instance]\ninstance-id=7\n"),
        )
        .unwrap();
        let mut cmd = std::process::Command::new("bwrap");
        cmd.args(["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib"])
            .args([
                "--symlink",
                "usr/lib64",
                "/lib64",
                "--symlink",
                "usr/bin",
                "/bin",
            ])
            .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
            .arg("--bind")
            .arg(self.bus.root())
            .arg(self.bus.root())
            .arg("--ro-bind")
            .arg(&info)
            .arg("/.flatpak-info")
            .arg("/usr/bin/python3")
            .arg(&script)
            .arg(ops.to_string())
            .env("DBUS_SESSION_BUS_ADDRESS", self.bus.address());
        cmd
    }
}

fn is_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Waits (up to 5 s) for `cond`; the documents service applies the
/// store's signals asynchronously.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 5 s) until the store has (or no longer has) `id` in its
/// documents table: the service writes it behind its reply, in order.
async fn store_settles(ps: &PermissionStoreProxy<'_>, id: &str, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ps
        .list("documents")
        .await
        .unwrap_or_default()
        .iter()
        .any(|i| i == id)
        != present
    {
        assert!(
            Instant::now() < deadline,
            "the store never settled on {id} = {present}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client independent of ours (python3-dbus), run inside the sandbox:
/// each op is a JSON list; prints one result per op: {"ok": value},
/// {"err": D-Bus error name} or {"errno": n}.
const CLIENT_PY: &str = r#"
import dbus, json, os, sys
bus = dbus.SessionBus()
d = dbus.Interface(bus.get_object("org.freedesktop.portal.Documents",
                                  "/org/freedesktop/portal/documents"),
                   "org.freedesktop.portal.Documents")
ft = dbus.Interface(bus.get_object("org.freedesktop.portal.Documents",
                                   "/org/freedesktop/portal/documents"),
                    "org.freedesktop.portal.FileTransfer")
def fd(path, mode):
    flags = {"r": os.O_RDONLY, "rw": os.O_RDWR, "path": os.O_PATH}[mode]
    return dbus.types.UnixFd(os.open(path, flags))
def ay(s):
    return dbus.Array([dbus.Byte(b) for b in s.encode() + b"\0"], signature="y")
def strs(l):
    return dbus.Array(l, signature="s")
def conv(v):
    if isinstance(v, dbus.Array) and v.signature == "y":
        return bytes(v).rstrip(b"\0").decode()
    if isinstance(v, (dbus.Array, list, tuple, dbus.Struct)):
        return [conv(x) for x in v]
    if isinstance(v, dbus.Dictionary):
        return {str(k): conv(x) for k, x in v.items()}
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (int, float)):
        return int(v)
    if v is None:
        return None
    return str(v)
out = []
key = None
for op in json.loads(sys.argv[1]):
    op = [key if a == "$KEY" else a for a in op]
    name = op[0]
    try:
        if name == "add":
            r = d.Add(fd(op[1], op[2]), op[3], op[4])
        elif name == "addfull":
            r = d.AddFull([fd(op[1], op[2])], dbus.UInt32(op[3]), op[4], strs(op[5]))[0]
        elif name == "addnamed":
            r = d.AddNamed(fd(op[1], "path"), ay(op[2]), True, True)
        elif name == "grant":
            r = d.GrantPermissions(op[1], op[2], strs(op[3]))
        elif name == "revoke":
            r = d.RevokePermissions(op[1], op[2], strs(op[3]))
        elif name == "delete":
            r = d.Delete(op[1])
        elif name == "info":
            r = d.Info(op[1])
        elif name == "list":
            r = d.List(op[1])
        elif name == "lookup":
            r = d.Lookup(ay(op[1]))
        elif name == "hostpaths":
            r = d.GetHostPaths(strs(op[1]))
        elif name == "start":
            r = key = str(ft.StartTransfer(dbus.Dictionary({k: dbus.Boolean(v) for k, v in op[1].items()}, signature="sv")))
        elif name == "addfiles":
            r = ft.AddFiles(op[1], [fd(p, op[3]) for p in op[2]], dbus.Dictionary({}, signature="sv"))
        elif name == "retrieve":
            r = ft.RetrieveFiles(op[1], dbus.Dictionary({}, signature="sv"))
        elif name == "stop":
            r = ft.StopTransfer(op[1])
        elif name == "hold":
            print(json.dumps(out), flush=True)
            out = []
            sys.stdin.readline()
            continue
        else:
            raise Exception("unknown op " + name)
        out.append({"ok": conv(r)})
    except dbus.exceptions.DBusException as e:
        out.append({"err": e.get_dbus_name()})
    except OSError as e:
        out.append({"errno": e.errno})
print(json.dumps(out))
"#;

/// A host Add shows the file in the host's view at once; AddFull with an
/// app shows it in that app's view, and another app's view shows nothing;
/// GetMountPoint, Info, List, Lookup and GetHostPaths answer as upstream;
/// the host-path xattr names the host file; version is 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_read_through_both_views_and_query() {
    if !can_run("add_read_through_both_views_and_query") {
        return;
    }
    let t = Docs::start().await;
    assert_eq!(t.proxy.version().await.unwrap(), 5);
    let mut mp = t.mount().into_os_string().into_encoded_bytes();
    mp.push(0);
    assert_eq!(t.proxy.get_mount_point().await.unwrap(), mp);
    assert!(is_mounted(&t.mount()));

    let path = t.file("report.txt", "quarterly numbers");
    let f = File::open(&path).unwrap();
    let id = t.proxy.add(Fd::from(f.as_fd()), true, true).await.unwrap();
    assert_eq!(
        fs::read_to_string(t.host_view(&id, "report.txt")).unwrap(),
        "quarterly numbers"
    );
    // Reuse-existing gives the same id for the same file.
    assert_eq!(
        t.proxy.add(Fd::from(f.as_fd()), true, true).await.unwrap(),
        id
    );
    // Without reuse, a new one.
    let unique = t.proxy.add(Fd::from(f.as_fd()), false, true).await.unwrap();
    assert_ne!(unique, id);

    let shared = t.export(&path, APP, &["read"]).await;
    assert_eq!(
        fs::read_to_string(t.app_view(APP, &shared, "report.txt")).unwrap(),
        "quarterly numbers"
    );
    // The host-added document is not the app's.
    assert_eq!(
        errno(fs::metadata(t.app_view(APP, &id, "report.txt"))),
        libc::ENOENT
    );
    // Another app sees none of them.
    for doc in [&id, &shared, &unique] {
        assert_eq!(
            errno(fs::metadata(t.app_view(OTHER, doc, "report.txt"))),
            libc::ENOENT
        );
    }
    let listed: Vec<String> = fs::read_dir(t.mount().join("by-app").join(APP))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed, std::slice::from_ref(&shared));
    assert!(
        fs::read_dir(t.mount().join("by-app").join(OTHER))
            .unwrap()
            .next()
            .is_none()
    );
    let mut root: Vec<String> = fs::read_dir(t.mount())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    root.sort();
    let mut want = vec![
        "by-app".to_string(),
        id.clone(),
        shared.clone(),
        unique.clone(),
    ];
    want.sort();
    assert_eq!(root, want);

    let mut host = path.clone().into_os_string().into_encoded_bytes();
    let xattr = xattr_get(
        &t.host_view(&id, "report.txt"),
        "user.document-portal.host-path",
    );
    assert_eq!(xattr, host);
    // The document's directory names the host directory holding the file,
    // as upstream's.
    assert_eq!(
        xattr_get(&t.mount().join(&id), "user.document-portal.host-path"),
        t.files().into_os_string().into_encoded_bytes()
    );
    host.push(0);
    let (info_path, apps) = t.proxy.info(&shared).await.unwrap();
    assert_eq!(info_path, host);
    assert_eq!(
        apps,
        HashMap::from([(APP.to_string(), vec!["read".to_string()])])
    );
    let all = t.proxy.list("").await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[&id], host);
    let of_app = t.proxy.list(APP).await.unwrap();
    assert_eq!(of_app.keys().collect::<Vec<_>>(), [&shared]);
    let lookup_path = {
        let mut p = path.clone().into_os_string().into_encoded_bytes();
        p.push(0);
        p
    };
    let found = t.proxy.lookup(&lookup_path).await.unwrap();
    assert!(found == id || found == shared, "{found}");
    assert_eq!(
        t.proxy
            .lookup(b"/nonexistent\0")
            .await
            .map_err(|e| e.to_string())
            .err()
            .map(|e| e.contains("NotFound")),
        Some(true)
    );
    // On the mount, only the document's own file names it: not its
    // directory, not a temporary file made next to it.
    let mut on_mount = t
        .host_view(&id, "report.txt")
        .into_os_string()
        .into_encoded_bytes();
    on_mount.push(0);
    assert_eq!(t.proxy.lookup(&on_mount).await.unwrap(), id);
    let mut doc_dir = t.mount().join(&id).into_os_string().into_encoded_bytes();
    doc_dir.push(0);
    assert_eq!(t.proxy.lookup(&doc_dir).await.unwrap(), "");
    let temp = t.mount().join(&id).join("temp");
    fs::write(&temp, "temp").unwrap();
    let mut temp_arg = temp.clone().into_os_string().into_encoded_bytes();
    temp_arg.push(0);
    assert_eq!(t.proxy.lookup(&temp_arg).await.unwrap(), "");
    let f = File::open(&temp).unwrap();
    assert_eq!(
        err_name(t.proxy.add(Fd::from(f.as_fd()), true, true).await),
        "org.freedesktop.portal.Error.InvalidArgument"
    );
    fs::remove_file(&temp).unwrap();
    let paths = t.proxy.get_host_paths(&[&id, "ffffffff"]).await.unwrap();
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[&id], host);
    assert_eq!(
        err_name(t.proxy.info("ffffffff").await),
        "org.freedesktop.portal.Error.InvalidArgument"
    );
}

/// setxattr(2) on `path`.
fn setxattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and outlive the call; value
    // is readable for value.len() bytes.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// (total blocks, fundamental block size) of the file system holding
/// `path`, as `stat -f` (statfs(2)) reports them.
fn statvfs_blocks(path: &Path) -> (u64, u64) {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%b %S"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap());
    (fields.next().unwrap(), fields.next().unwrap())
}

fn xattr_get(path: &Path, name: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = libc_getxattr(path, name, &mut buf);
    buf.truncate(n);
    buf
}

fn libc_getxattr(path: &Path, name: &str, buf: &mut [u8]) -> usize {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and live across the call;
    // buf is writable for buf.len() bytes.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        r >= 0,
        "getxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    r as usize
}

/// A grant is seen in the app's view when GrantPermissions returns, a
/// revocation ends access when RevokePermissions returns, also through a
/// file the app had open (its cached pages are dropped too), and one app's
/// grant gives another app nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_and_revoke_are_seen_at_once() {
    if !can_run("grant_and_revoke_are_seen_at_once") {
        return;
    }
    let t = Docs::start().await;
    let path = t.file("notes.txt", "remember the milk");
    let id = t.export(&path, "", &[]).await;
    let view = t.app_view(APP, &id, "notes.txt");
    assert_eq!(errno(fs::metadata(&view)), libc::ENOENT);

    t.proxy
        .grant_permissions(&id, APP, &["read"])
        .await
        .unwrap();
    assert_eq!(fs::read_to_string(&view).unwrap(), "remember the milk");
    assert_eq!(
        errno(fs::metadata(t.app_view(OTHER, &id, "notes.txt"))),
        libc::ENOENT
    );

    // Open and read once (the kernel caches the pages), then revoke.
    let mut open = File::open(&view).unwrap();
    let mut s = String::new();
    open.read_to_string(&mut s).unwrap();
    t.proxy
        .revoke_permissions(&id, APP, &["read"])
        .await
        .unwrap();
    assert_eq!(errno(fs::metadata(&view)), libc::ENOENT);
    let mut again = vec![0u8; 8];
    assert_eq!(
        errno(std::os::unix::fs::FileExt::read_at(&open, &mut again, 0)),
        libc::EACCES,
        "an fd opened before the revocation still reads"
    );
    assert!(
        fs::read_dir(t.mount().join("by-app").join(APP))
            .unwrap()
            .next()
            .is_none(),
        "the revoked document is still listed"
    );
    // A burst of changes: the store's echoes of older states never win
    // over the last one, in memory, in the view or in the store.
    for _ in 0..20 {
        t.proxy
            .grant_permissions(&id, APP, &["read"])
            .await
            .unwrap();
        t.proxy
            .revoke_permissions(&id, APP, &["read"])
            .await
            .unwrap();
    }
    t.proxy
        .grant_permissions(&id, APP, &["read", "write"])
        .await
        .unwrap();
    let ps = PermissionStoreProxy::new(&t.conn).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (perms, _) = ps.lookup("documents", &id).await.unwrap();
        if perms.get(APP).map(Vec::as_slice) == Some(&["read".to_string(), "write".to_string()][..])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store never got the last grant: {perms:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.proxy.info(&id).await.unwrap().1[APP], ["read", "write"]);
    assert_eq!(fs::read_to_string(&view).unwrap(), "remember the milk");
    // The host's view is unaffected.
    assert_eq!(
        fs::read_to_string(t.host_view(&id, "notes.txt")).unwrap(),
        "remember the milk"
    );
}

/// A read-only grant: opening for writing, truncating, creating a file next
/// to it, renaming and unlinking all fail with EACCES, and the host file
/// is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_grant_refuses_every_write() {
    if !can_run("a_read_only_grant_refuses_every_write") {
        return;
    }
    let t = Docs::start().await;
    let path = t.file("ro.txt", "original");
    let id = t.export(&path, APP, &["read"]).await;
    let view = t.app_view(APP, &id, "ro.txt");
    assert_eq!(fs::read_to_string(&view).unwrap(), "original");
    assert_eq!(
        app_open_errno(&view, OpenOptions::new().write(true)),
        libc::EACCES
    );
    assert_eq!(
        app_open_errno(&view, OpenOptions::new().read(true).write(true)),
        libc::EACCES
    );
    assert_eq!(
        app_open_errno(
            &view,
            OpenOptions::new().read(true).custom_flags(libc::O_TRUNC)
        ),
        libc::EACCES
    );
    assert_root_cannot_write(&view);
    assert_eq!(
        errno(
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_TRUNC)
                .open(&view)
        ),
        libc::EACCES
    );
    let dir = view.parent().unwrap();
    assert_eq!(errno(File::create(dir.join("new.txt"))), libc::EACCES);
    assert_eq!(errno(fs::remove_file(&view)), libc::EACCES);
    assert_eq!(errno(fs::rename(&view, dir.join("moved"))), libc::EACCES);
    let meta = fs::metadata(&view).unwrap();
    assert_eq!(meta.mode() & 0o222, 0, "a read-only view shows write bits");
    assert_eq!(fs::read_to_string(&path).unwrap(), "original");
    assert_eq!(
        fs::read_dir(t.files()).unwrap().count(),
        1,
        "a file appeared on the host"
    );
}

/// Safe save through an app's read-write view: the editor writes a new
/// file next to the document and renames it over it. The host file gets
/// the new content in one step (a new inode, the old one never
/// half-written), no temporary file is left on the host, and a temporary
/// file is visible only in the view that made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_save_replaces_the_host_file_atomically() {
    if !can_run("safe_save_replaces_the_host_file_atomically") {
        return;
    }
    let t = Docs::start().await;
    let path = t.file("draft.txt", "version 1");
    let old_ino = fs::metadata(&path).unwrap().ino();
    let id = t.export(&path, APP, &["read", "write"]).await;
    let view = t.app_view(APP, &id, "draft.txt");
    let dir = view.parent().unwrap().to_owned();

    let temp = dir.join(".draft.txt.swp");
    let mut f = File::create(&temp).unwrap();
    f.write_all(b"version 2, saved safely").unwrap();
    f.sync_all().unwrap();
    drop(f);
    // Visible in this view only, under the name the editor chose.
    assert!(temp.exists());
    assert_eq!(
        errno(fs::metadata(t.host_view(&id, ".draft.txt.swp"))),
        libc::ENOENT
    );
    // On the host it is a hidden temporary file; the document is unchanged.
    assert_eq!(fs::read_to_string(&path).unwrap(), "version 1");
    let host_names: Vec<OsString> = fs::read_dir(t.files())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(host_names.len(), 2, "{host_names:?}");
    assert!(
        host_names
            .iter()
            .any(|n| n.to_string_lossy().starts_with(".xdp-.draft.txt.swp-")),
        "{host_names:?}"
    );

    // No hard links into or out of a document directory.
    assert!(fs::hard_link(&view, dir.join("hard")).is_err());
    assert!(fs::hard_link(&path, dir.join("hard")).is_err());
    fs::rename(&temp, &view).unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "version 2, saved safely"
    );
    assert_ne!(
        fs::metadata(&path).unwrap().ino(),
        old_ino,
        "not replaced by rename"
    );
    assert_eq!(
        fs::read_to_string(&view).unwrap(),
        "version 2, saved safely"
    );
    assert_eq!(
        fs::read_to_string(t.host_view(&id, "draft.txt")).unwrap(),
        "version 2, saved safely"
    );
    assert_eq!(
        fs::read_dir(t.files()).unwrap().count(),
        1,
        "a temporary file was left"
    );
    assert_eq!(errno(fs::metadata(&temp)), libc::ENOENT);

    // As upstream: no xattrs set on a file document, no rmdir of a file.
    assert_eq!(errno(setxattr(&view, "user.attr", b"x")), libc::EPERM);
    assert_eq!(errno(fs::remove_dir(&view)), libc::ENOTDIR);
    // An open file keeps working after its name is renamed away and
    // removed: read, fstat and ftruncate act on the file itself.
    let mut open = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&view)
        .unwrap();
    fs::rename(&view, dir.join("moved-away")).unwrap();
    fs::remove_file(dir.join("moved-away")).unwrap();
    let mut s = String::new();
    open.read_to_string(&mut s).unwrap();
    assert_eq!(s, "version 2, saved safely");
    assert_eq!(open.metadata().unwrap().len(), s.len() as u64);
    open.set_len(0).unwrap();
    drop(open);
    fs::write(&view, "version 2, saved safely").unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "version 2, saved safely"
    );
    // Free space is the real file system's (an editor checks it before
    // saving).
    let ours = statvfs_blocks(&view);
    let real = statvfs_blocks(&path);
    assert!(ours.0 > 0 && ours.0 == real.0, "{ours:?} vs {real:?}");
    // Writing in place works too, and the next open sees it.
    fs::write(&view, "version 3").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "version 3");
    // A change made on the host behind our back is seen as soon as inotify
    // tells the service (the kept page cache is dropped when the file
    // changed); until then a read gives the whole old content, never a mix.
    fs::write(&path, "changed on the host, longer").unwrap();
    settles_to(&view, "version 3", "changed on the host, longer").await;
}

/// Reads of `view` give `new` well under the cache's minute, and until then
/// the whole of `old`: never one cut at the other's size.
async fn settles_to(view: &Path, old: &str, new: &str) {
    let deadline = Instant::now() + Duration::from_millis(1000);
    loop {
        let got = fs::read_to_string(view).unwrap();
        if got == new {
            return;
        }
        assert_eq!(got, old, "neither the old nor the new content");
        assert!(Instant::now() < deadline, "still {old:?} after 1 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// With `--no-file-cache` opens are asked, as upstream: even root (which
/// the kernel lets pass over file modes) is refused at open for writing a
/// read-only grant, after other opens too, and an open file stays the file
/// it opened when the host removes and remakes its name. (By default opens
/// cost no round trip and these differ, as `document-fuse/README.md`
/// lists.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_file_cache_opens_are_asked_as_upstream() {
    if !can_run("without_the_file_cache_opens_are_asked_as_upstream") {
        return;
    }
    let t = Docs::start_with(&["--no-file-cache"]).await;
    let ro = t.file("ro.txt", "read only");
    let id = t.export(&ro, APP, &["read"]).await;
    let view = t.app_view(APP, &id, "ro.txt");
    // Not the mount's first open: by default only that one is asked.
    assert_eq!(fs::read_to_string(&view).unwrap(), "read only");
    assert_eq!(
        errno(OpenOptions::new().write(true).open(&view)),
        libc::EACCES
    );
    assert_eq!(
        app_open_errno(&view, OpenOptions::new().read(true).write(true)),
        libc::EACCES
    );

    let path = t.file("kept.txt", "the file it opened");
    let id = t.export(&path, APP, &["read", "write"]).await;
    let view = t.app_view(APP, &id, "kept.txt");
    let open = File::open(&view).unwrap();
    fs::remove_file(&path).unwrap();
    // Past the jiffy in which the kernel still counts the attributes it got
    // with no cache time as fresh, so the fstat asks the service.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        open.metadata().unwrap().len(),
        18,
        "fstat after the removal"
    );
    fs::write(&path, "another file").unwrap();
    let mut buf = vec![0u8; 64];
    let n = std::os::unix::fs::FileExt::read_at(&open, &mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"the file it opened");
    assert_eq!(fs::read_to_string(&view).unwrap(), "another file");
}

/// By default the kernel may cache a file document's entry and attributes
/// (so a stat or an open costs no round trip to the service), but a change
/// made to the real file by anyone shows through every view at once: far
/// sooner than the cache's minute, in size, mode, content, replacement
/// and removal. A rename through the view is seen at once too. With
/// `--no-file-cache` every change shows in the same instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_the_real_file_show_at_once_despite_caching() {
    if !can_run("changes_to_the_real_file_show_at_once_despite_caching") {
        return;
    }
    changes_show(false).await;
    changes_show(true).await;
}

/// Waits for `cond` well under the kernel's cache time (60 s), so only the
/// invalidation can make it hold; `strict` (no cache): not at all.
async fn soon(strict: bool, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(1000);
    while !cond() {
        assert!(!strict, "not seen in the same instant: {what}");
        assert!(Instant::now() < deadline, "not seen within 1 s: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn changes_show(strict: bool) {
    let t = Docs::start_with(if strict { &["--no-file-cache"] } else { &[] }).await;
    let path = t.file("report.txt", "v1");
    let id = t.export(&path, APP, &["read", "write"]).await;
    let views = [
        t.app_view(APP, &id, "report.txt"),
        t.host_view(&id, "report.txt"),
    ];
    let len = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(u64::MAX);
    for v in &views {
        assert_eq!(len(v), 2);
        assert_eq!(len(v), 2);
    }

    fs::write(&path, "version two").unwrap();
    for v in &views {
        soon(strict, "a write on the host", || len(v) == 11).await;
    }
    // Read right away: the content, not cut at an old size.
    fs::write(&path, "version three, longer").unwrap();
    assert_eq!(
        fs::read_to_string(&views[0]).unwrap(),
        "version three, longer"
    );

    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    for v in &views {
        soon(strict, "a chmod on the host", || {
            fs::metadata(v).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o600)
        })
        .await;
    }

    // An editor on the host saving atomically: a new file renamed over.
    let next = t.files().join("report.txt.new");
    fs::write(&next, "saved by a host editor").unwrap();
    let new_ino = fs::metadata(&next).unwrap().ino();
    fs::rename(&next, &path).unwrap();
    for v in &views {
        soon(strict, "a rename over the file on the host", || {
            len(v) == 22
        })
        .await;
    }
    assert_eq!(
        fs::read_to_string(&views[0]).unwrap(),
        "saved by a host editor"
    );
    assert_eq!(fs::metadata(&path).unwrap().ino(), new_ino);

    // A safe save through the view: seen at once, no waiting.
    let dir = views[0].parent().unwrap();
    let temp = dir.join("report.txt~");
    fs::write(&temp, "saved through the view").unwrap();
    fs::rename(&temp, &views[0]).unwrap();
    assert_eq!(len(&views[0]), 22);
    assert_eq!(
        fs::read_to_string(&views[0]).unwrap(),
        "saved through the view"
    );
    assert_eq!(errno(fs::metadata(&temp)), libc::ENOENT);
    soon(strict, "a safe save in the other view", || {
        fs::read_to_string(&views[1]).is_ok_and(|s| s == "saved through the view")
    })
    .await;

    fs::remove_file(&path).unwrap();
    for v in &views {
        // Not errno(): it panics on the stat that still succeeds before the
        // invalidation arrives.
        soon(
            strict,
            "a removal on the host",
            || matches!(fs::metadata(v), Err(e) if e.raw_os_error() == Some(libc::ENOENT)),
        )
        .await;
    }
    fs::write(&path, "back").unwrap();
    for v in &views {
        soon(strict, "the file made again on the host", || len(v) == 4).await;
    }
}

/// Delete removes the document from every view when it returns; the
/// store no longer has it; unknown ids are NotFound for Delete, Grant and
/// Revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_unknown_ids() {
    if !can_run("delete_and_unknown_ids") {
        return;
    }
    let t = Docs::start().await;
    let path = t.file("gone.txt", "bye");
    let id = t.export(&path, APP, &["read"]).await;
    assert!(t.app_view(APP, &id, "gone.txt").exists());
    t.proxy.delete(&id).await.unwrap();
    assert_eq!(
        errno(fs::metadata(t.app_view(APP, &id, "gone.txt"))),
        libc::ENOENT
    );
    assert_eq!(
        errno(fs::metadata(t.host_view(&id, "gone.txt"))),
        libc::ENOENT
    );
    assert!(path.exists(), "Delete removed the host file");
    let ps = PermissionStoreProxy::new(&t.conn).await.unwrap();
    // The store is written behind the reply, in order, as upstream does.
    store_settles(&ps, &id, false).await;
    let not_found = "org.freedesktop.portal.Error.NotFound";
    assert_eq!(err_name(t.proxy.delete(&id).await), not_found);
    assert_eq!(
        err_name(t.proxy.grant_permissions("ffffffff", APP, &["read"]).await),
        not_found
    );
    assert_eq!(
        err_name(t.proxy.revoke_permissions("ffffffff", APP, &["read"]).await),
        not_found
    );
    assert_eq!(err_name(t.proxy.delete("../etc").await), not_found);
    // Bad app ids and permission names.
    let id = t.export(&path, "", &[]).await;
    let invalid = "org.freedesktop.portal.Error.InvalidArgument";
    assert_eq!(
        err_name(
            t.proxy
                .grant_permissions(&id, "not an app", &["read"])
                .await
        ),
        invalid
    );
    assert_eq!(
        err_name(t.proxy.grant_permissions(&id, APP, &["execute"]).await),
        invalid
    );
}

/// Both services restart without losing a persistent document or a grant
/// (the documents are rows of the store's `documents` table in upstream's
/// format); a transient document ends with the service, as upstream. A
/// grant revoked in the store by another client (permctl, say) ends the
/// app's access through the `Changed` signal. SIGHUP and SIGTERM unmount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_documents_and_the_store_stays_the_truth() {
    if !can_run("restarts_keep_documents_and_the_store_stays_the_truth") {
        return;
    }
    let mut t = Docs::start().await;
    let path = t.file("kept.txt", "still here");
    let kept = t.export(&path, APP, &["read", "write"]).await;
    let f = File::open(&path).unwrap();
    let (ids, _) = t
        .proxy
        .add_full(&[Fd::from(f.as_fd())], 0, OTHER, &["read"])
        .await
        .unwrap();
    let transient = ids[0].clone();
    assert!(t.app_view(OTHER, &transient, "kept.txt").exists());

    // The row in upstream's format: (ay path with NUL, dev, ino, flags).
    let ps = PermissionStoreProxy::new(&t.conn).await.unwrap();
    store_settles(&ps, &kept, true).await;
    let (perms, data) = ps.lookup("documents", &kept).await.unwrap();
    assert_eq!(perms[APP], ["read", "write"]);
    let dir_meta = fs::metadata(t.files()).unwrap();
    let (p, dev, ino, flags): (Vec<u8>, u64, u64, u32) = zvariant::Value::from(data)
        .downcast()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut want = path.clone().into_os_string().into_encoded_bytes();
    want.push(0);
    assert_eq!(
        (p, dev, ino, flags),
        (want, dir_meta.dev(), dir_meta.ino(), 1)
    );
    assert!(!ps.list("documents").await.unwrap().contains(&transient));
    assert!(db_path(&t.bus).exists(), "the store's database");

    // Added right before the stop: the writes queued behind the reply are
    // sent before the service exits.
    let late = t
        .export(&t.file("late.txt", "just in time"), APP, &["read"])
        .await;
    t.stop_docs(libc::SIGHUP);
    t.store.stop();
    t.store = start_store(&t.bus).await;
    t.docs = start_docs(&t.bus, &[]).await;
    assert_eq!(
        fs::read_to_string(t.app_view(APP, &kept, "kept.txt")).unwrap(),
        "still here"
    );
    assert_eq!(
        fs::read_to_string(t.app_view(APP, &late, "late.txt")).unwrap(),
        "just in time"
    );
    assert_eq!(
        errno(fs::metadata(t.app_view(OTHER, &transient, "kept.txt"))),
        libc::ENOENT
    );
    assert_eq!(
        errno(fs::metadata(t.host_view(&transient, "kept.txt"))),
        libc::ENOENT
    );

    // The store restarts under a running document service: nothing lost.
    t.store.stop();
    t.store = start_store(&t.bus).await;
    t.proxy
        .grant_permissions(&kept, OTHER, &["read"])
        .await
        .unwrap();
    assert_eq!(
        fs::read_to_string(t.app_view(OTHER, &kept, "kept.txt")).unwrap(),
        "still here"
    );

    // permctl shows the grant and revokes it in the store, like any
    // other: gone from the app's view.
    let (code, out, err) = permctl(&t.bus, &["list", "documents", &kept]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(APP) && out.contains("read,write"), "{out}");
    let (code, out, err) = permctl(&t.bus, &["revoke", "documents", &kept, APP]);
    assert_eq!(code, 0, "{out}{err}");
    let view = t.app_view(APP, &kept, "kept.txt");
    eventually("the store's revocation to reach the mount", || {
        !view.exists()
    })
    .await;
    assert_eq!(t.proxy.info(&kept).await.unwrap().1.get(APP), None);
    t.stop_docs(libc::SIGTERM);
}

/// Unmounted from outside (`umount`), the service has nothing to serve: it
/// releases its name and exits cleanly, as upstream exits then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmount_from_outside_ends_the_service() {
    if !can_run("an_unmount_from_outside_ends_the_service") {
        return;
    }
    let mut t = Docs::start().await;
    let (status, out, err) = run_with_timeout(
        std::process::Command::new("umount").arg(t.mount()),
        Duration::from_secs(10),
    );
    assert!(status.success(), "{out}{err}");
    let status = t
        .docs
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running:\n{}", t.docs.log_text()));
    assert!(status.success(), "{status}:\n{}", t.docs.log_text());
    assert!(t.docs.log_text().contains("unmounted from outside"));
    let dbus = zbus::fdo::DBusProxy::new(&t.conn).await.unwrap();
    assert!(
        !dbus
            .name_has_owner(DOCS_NAME.try_into().unwrap())
            .await
            .unwrap()
    );
}

/// Hostile input from the host side: names with a slash, `..`, `.`, empty;
/// fds that are a pipe, a socket, write-only, or O_PATH|O_NOFOLLOW; flags
/// out of range; none of it makes a document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_fds_are_refused() {
    if !can_run("hostile_names_and_fds_are_refused") {
        return;
    }
    let t = Docs::start().await;
    let path = t.file("target.txt", "x");
    let dir = File::open(t.files()).unwrap();
    let invalid = "org.freedesktop.portal.Error.InvalidArgument";
    for name in [
        &b"a/b\0"[..],
        b"..\0",
        b".\0",
        b"\0",
        b"/etc/passwd\0",
        b"../../etc/passwd\0",
    ] {
        assert_eq!(
            err_name(
                t.proxy
                    .add_named(Fd::from(dir.as_fd()), name, true, true)
                    .await
            ),
            invalid,
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
    // Odd but legal names (a newline, bytes that are not UTF-8) are just
    // names: exported and read back byte for byte.
    let odd = std::ffi::OsStr::from_bytes(b"odd\nname \xff\xfe.txt");
    fs::write(t.files().join(odd), "odd").unwrap();
    let mut odd_arg = odd.as_bytes().to_vec();
    odd_arg.push(0);
    let odd_id = t
        .proxy
        .add_named(Fd::from(dir.as_fd()), &odd_arg, true, true)
        .await
        .unwrap();
    assert_eq!(
        fs::read_to_string(t.mount().join(&odd_id).join(odd)).unwrap(),
        "odd"
    );
    t.proxy.delete(&odd_id).await.unwrap();
    // A plain name works.
    let named = t
        .proxy
        .add_named(Fd::from(dir.as_fd()), b"target.txt\0", true, true)
        .await
        .unwrap();
    assert_eq!(
        fs::read_to_string(t.host_view(&named, "target.txt")).unwrap(),
        "x"
    );

    let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let write_only = OpenOptions::new().write(true).open(&path).unwrap();
    let nofollow = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(&path)
        .unwrap();
    let a_dir = File::open(t.files()).unwrap();
    for (what, fd) in [
        ("pipe", pipe_r.as_fd()),
        ("socket", sock.as_fd()),
        ("write-only", write_only.as_fd()),
        ("O_PATH|O_NOFOLLOW", nofollow.as_fd()),
        (
            "a directory without the export-directory flag",
            a_dir.as_fd(),
        ),
    ] {
        assert_eq!(
            err_name(t.proxy.add(Fd::from(fd), true, true).await),
            invalid,
            "{what}"
        );
    }
    let f = File::open(&path).unwrap();
    assert_eq!(
        err_name(t.proxy.add_full(&[Fd::from(f.as_fd())], 16, "", &[]).await),
        invalid,
        "unknown flag"
    );
    assert_eq!(
        err_name(t.proxy.add_full(&[], 0, "", &[]).await),
        invalid,
        "no fds"
    );
    // Only the named document exists.
    assert_eq!(t.proxy.list("").await.unwrap().len(), 1);
}

/// The exported file's directory, or the file itself, swapped for a
/// symlink after export exposes nothing of the target: the document
/// vanishes instead. A hard link elsewhere is not reachable either.
/// Reads of `view` end with ENOENT well under the cache's minute (the
/// kernel serves the old file's cached entry and pages until inotify drops
/// them, microseconds later), and no read meanwhile returns `secret`.
async fn ends_without_exposing(view: &Path, secret: &str) {
    let deadline = Instant::now() + Duration::from_millis(1000);
    loop {
        match fs::read_to_string(view) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
            Ok(s) => assert_ne!(s, secret, "the symlink's target was exposed"),
            Err(e) => panic!("{}: {e}", view.display()),
        }
        assert!(
            Instant::now() < deadline,
            "{} still readable after 1 s",
            view.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_after_export_exposes_nothing() {
    if !can_run("a_symlink_swapped_in_after_export_exposes_nothing") {
        return;
    }
    let t = Docs::start().await;
    let exported = t.files().join("exported");
    let secret = t.files().join("secret");
    fs::create_dir(&exported).unwrap();
    fs::create_dir(&secret).unwrap();
    fs::write(exported.join("doc.txt"), "public").unwrap();
    fs::write(secret.join("doc.txt"), "SECRET").unwrap();
    fs::write(secret.join("other.txt"), "SECRET").unwrap();
    let id = t
        .export(&exported.join("doc.txt"), APP, &["read", "write"])
        .await;
    let view = t.app_view(APP, &id, "doc.txt");
    assert_eq!(fs::read_to_string(&view).unwrap(), "public");

    // The directory swapped for a symlink to the secret one.
    fs::rename(&exported, t.files().join("moved")).unwrap();
    std::os::unix::fs::symlink(&secret, &exported).unwrap();
    ends_without_exposing(&view, "SECRET").await;
    assert_eq!(
        errno(fs::read_to_string(t.host_view(&id, "doc.txt"))),
        libc::ENOENT
    );
    // Writing through the view cannot create a file in the secret dir.
    assert!(File::create(&view).is_err());
    assert_eq!(
        fs::read_to_string(secret.join("doc.txt")).unwrap(),
        "SECRET"
    );

    // Back, then the file itself swapped for a symlink: not followed.
    fs::remove_file(&exported).unwrap();
    fs::rename(t.files().join("moved"), &exported).unwrap();
    assert_eq!(fs::read_to_string(&view).unwrap(), "public");
    fs::remove_file(exported.join("doc.txt")).unwrap();
    std::os::unix::fs::symlink(secret.join("doc.txt"), exported.join("doc.txt")).unwrap();
    ends_without_exposing(&view, "SECRET").await;
    // Other names in the document's directory are never reachable.
    fs::write(exported.join("neighbour.txt"), "neighbour").unwrap();
    assert_eq!(
        errno(fs::metadata(view.with_file_name("neighbour.txt"))),
        libc::ENOENT
    );
}

/// A sandboxed caller (python3-dbus in a bubblewrap root whose
/// `/.flatpak-info` names the app): adds a file it opened for reading and
/// gets read and grant-permissions (no write: its fd was read-only); may
/// grant only what it holds; may not AddNamed, Info, List or Lookup; sees
/// host paths only of its own documents; an fd on the mount itself is
/// accepted only for reuse, never copied into a new document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_caller_gets_only_what_it_proves() {
    if !can_run_sandboxed_client("a_sandboxed_caller_gets_only_what_it_proves") {
        return;
    }
    let t = Docs::start().await;
    let path = t.file("mine.txt", "app data");
    let p = path.to_string_lossy().into_owned();
    let r = t.sandboxed(
        APP,
        serde_json::json!([
            ["add", p, "r", true, true],
            ["addfull", p, "r", PERSISTENT, OTHER, ["read", "write"]],
            ["addnamed", t.files().to_string_lossy(), "mine.txt"],
        ]),
    );
    let id = r[0]["ok"]
        .as_str()
        .unwrap_or_else(|| panic!("{r:?}"))
        .to_owned();
    assert_eq!(
        r[1]["err"], "org.freedesktop.portal.Error.NotAllowed",
        "{r:?}"
    );
    assert_eq!(
        r[2]["err"], "org.freedesktop.portal.Error.NotAllowed",
        "{r:?}"
    );
    let (_, apps) = t.proxy.info(&id).await.unwrap();
    // Read-only fd: no write (and so no delete), as upstream.
    assert_eq!(apps[APP], ["read", "grant-permissions"]);
    assert!(t.app_view(APP, &id, "mine.txt").exists());

    let foreign = t
        .export(&t.file("foreign.txt", "not yours"), OTHER, &["read"])
        .await;
    let r = t.sandboxed(
        APP,
        serde_json::json!([
            ["grant", id, OTHER, ["read", "write"]],
            ["grant", id, OTHER, ["read"]],
            ["grant", foreign, APP, ["read"]],
            ["revoke", id, APP, ["read"]],
            ["info", id],
            ["list", ""],
            ["lookup", p],
            ["hostpaths", [id, foreign, "ffffffff"]],
            ["delete", foreign],
            ["addfull", p, "rw", PERSISTENT, OTHER, ["read", "write"]],
        ]),
    );
    let not_allowed = "org.freedesktop.portal.Error.NotAllowed";
    assert_eq!(
        r[0]["err"], not_allowed,
        "granted write it does not hold: {r:?}"
    );
    assert!(r[1].get("ok").is_some(), "{r:?}");
    assert_eq!(
        r[2]["err"], not_allowed,
        "granted on a document it has no grant on: {r:?}"
    );
    assert_eq!(r[3]["err"], not_allowed, "revoked its own: {r:?}");
    for i in 4..=6 {
        assert_eq!(r[i]["err"], not_allowed, "op {i}: {r:?}");
    }
    assert_eq!(r[7]["ok"], serde_json::json!({ id.clone(): p }), "{r:?}");
    assert_eq!(r[8]["err"], not_allowed, "{r:?}");
    let rw_id = r[9]["ok"][0].as_str().unwrap_or_else(|| panic!("{r:?}"));
    let (_, apps) = t.proxy.info(rw_id).await.unwrap();
    assert_eq!(apps[APP], ["read", "write", "grant-permissions", "delete"]);
    assert_eq!(apps[OTHER], ["read", "write"]);
    assert!(t.app_view(OTHER, &id, "mine.txt").exists());

    // An fd on the mount: reuse gives the same document; without reuse it
    // is refused (a copy would escape a later revocation).
    let on_mount = t
        .app_view(APP, &id, "mine.txt")
        .to_string_lossy()
        .into_owned();
    let r = t.sandboxed(
        APP,
        serde_json::json!([
            ["add", on_mount, "r", true, true],
            ["add", on_mount, "r", false, true],
        ]),
    );
    assert_eq!(r[0]["ok"], id.as_str(), "{r:?}");
    assert_eq!(
        r[1]["err"], "org.freedesktop.portal.Error.InvalidArgument",
        "{r:?}"
    );
}

/// Our live object against Debian's copy of upstream's interface XML
/// (version 4; version 5 adds GetHostPaths, which we serve too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_object_serves_upstreams_interface() {
    conforms(
        "the_documents_object_serves_upstreams_interface",
        "org.freedesktop.portal.Documents",
    )
    .await;
}

/// Our live documents object, checked against Debian's copy of upstream's
/// XML for `interface`; `test` names the caller for a skip.
async fn conforms(test: &str, interface: &str) {
    if !can_run(test) {
        return;
    }
    let reference = conformance::reference_path(interface);
    if !porthole_tests::anchor_present(&reference.to_string_lossy(), "xdg-desktop-portal-dev") {
        return;
    }
    let t = Docs::start().await;
    let mismatches = conformance::check_object(&t.conn, DOCS_NAME, DOCS_PATH, &reference)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        mismatches.is_empty(),
        "{}",
        mismatches
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A directory document (AddFull with export-directory): the app's view
/// shows the directory under its own name and the real tree below it; a
/// read-write grant creates, renames, links and removes there (seen on the
/// host at once), a read-only grant only reads; the directory swapped for
/// a symlink exposes nothing; a file inside, passed back to Add through
/// the mount, becomes a document of its own for the real file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_document_shows_its_tree() {
    if !can_run("a_directory_document_shows_its_tree") {
        return;
    }
    let t = Docs::start().await;
    let project = t.files().join("project");
    fs::create_dir_all(project.join("src")).unwrap();
    fs::write(project.join("README"), "read me").unwrap();
    fs::write(project.join("src/main.rs"), "fn main() {}").unwrap();
    let dir = File::open(&project).unwrap();
    const EXPORT_DIRECTORY: u32 = 8;
    let (ids, _) = t
        .proxy
        .add_full(
            &[Fd::from(dir.as_fd())],
            PERSISTENT | EXPORT_DIRECTORY,
            APP,
            &["read", "write"],
        )
        .await
        .unwrap();
    let id = &ids[0];
    t.proxy
        .grant_permissions(id, OTHER, &["read"])
        .await
        .unwrap();
    let rw = t.app_view(APP, id, "project");
    let ro = t.app_view(OTHER, id, "project");
    let names = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&t.mount().join("by-app").join(APP).join(id)),
        ["project"]
    );
    assert!(fs::metadata(&rw).unwrap().is_dir());
    // The document's directory is 0500 even for a read-write grant (it
    // holds only the exported directory), as upstream's.
    assert_eq!(
        fs::metadata(rw.parent().unwrap()).unwrap().mode() & 0o7777,
        0o500
    );
    assert_eq!(names(&rw), ["README", "src"]);
    assert_eq!(
        fs::read_to_string(rw.join("src/main.rs")).unwrap(),
        "fn main() {}"
    );
    assert_eq!(fs::read_to_string(ro.join("README")).unwrap(), "read me");
    assert_eq!(
        xattr_get(&rw.join("src/main.rs"), "user.document-portal.host-path"),
        project
            .join("src/main.rs")
            .into_os_string()
            .into_encoded_bytes()
    );

    // Read-write: the editor's safe save, a new directory, a symlink,
    // removal; all on the host at once. A file open while its name is
    // replaced or removed through the view stays the file it opened.
    let mut before_save = File::open(rw.join("src/main.rs")).unwrap();
    fs::write(rw.join("src/.main.rs.tmp"), "fn main() { saved() }").unwrap();
    fs::rename(rw.join("src/.main.rs.tmp"), rw.join("src/main.rs")).unwrap();
    assert_eq!(
        fs::read_to_string(project.join("src/main.rs")).unwrap(),
        "fn main() { saved() }"
    );
    let mut old = String::new();
    before_save.read_to_string(&mut old).unwrap();
    assert_eq!(
        old, "fn main() {}",
        "the replaced file, through an fd open before"
    );
    fs::write(rw.join("src/scratch.txt"), "scratch").unwrap();
    let scratch = File::open(rw.join("src/scratch.txt")).unwrap();
    fs::remove_file(rw.join("src/scratch.txt")).unwrap();
    let mut buf = [0u8; 16];
    let n = std::os::unix::fs::FileExt::read_at(&scratch, &mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        b"scratch",
        "a removed file, through an fd open before"
    );
    fs::write(rw.join("src/moving.txt"), "moving").unwrap();
    let moving = File::open(rw.join("src/moving.txt")).unwrap();
    fs::rename(rw.join("src/moving.txt"), rw.join("src/moved.txt")).unwrap();
    // Past the jiffy in which attributes with no cache time count as
    // fresh, so the read asks the service by number.
    std::thread::sleep(Duration::from_millis(20));
    let n = std::os::unix::fs::FileExt::read_at(&moving, &mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        b"moving",
        "a renamed file, through an fd open before"
    );
    fs::remove_file(rw.join("src/moved.txt")).unwrap();
    fs::create_dir(rw.join("docs")).unwrap();
    fs::write(rw.join("docs/guide.md"), "# guide").unwrap();
    assert_eq!(
        fs::read_to_string(project.join("docs/guide.md")).unwrap(),
        "# guide"
    );
    std::os::unix::fs::symlink("../README", rw.join("docs/readme-link")).unwrap();
    assert_eq!(
        fs::read_link(rw.join("docs/readme-link")).unwrap(),
        Path::new("../README")
    );
    assert_eq!(
        fs::read_link(project.join("docs/readme-link")).unwrap(),
        Path::new("../README")
    );
    // Hard links inside the document: allowed with write, and a hard link
    // shows as the one inode it is, as upstream.
    fs::hard_link(rw.join("README"), rw.join("docs/readme-hard")).unwrap();
    assert_eq!(
        fs::metadata(rw.join("README")).unwrap().ino(),
        fs::metadata(rw.join("docs/readme-hard")).unwrap().ino()
    );
    assert_eq!(
        fs::read_to_string(project.join("docs/readme-hard")).unwrap(),
        "read me"
    );
    fs::remove_file(rw.join("docs/readme-hard")).unwrap();
    fs::remove_file(rw.join("docs/readme-link")).unwrap();
    fs::remove_file(rw.join("docs/guide.md")).unwrap();
    fs::remove_dir(rw.join("docs")).unwrap();
    assert!(!project.join("docs").exists());

    // Read-only: nothing changes.
    assert_eq!(errno(File::create(ro.join("new"))), libc::EACCES);
    assert_eq!(
        app_open_errno(&ro.join("README"), OpenOptions::new().write(true)),
        libc::EACCES
    );
    assert_root_cannot_write(&ro.join("README"));
    assert_eq!(errno(fs::remove_file(ro.join("README"))), libc::EACCES);
    assert_eq!(errno(fs::create_dir(ro.join("d"))), libc::EACCES);
    assert_eq!(
        errno(fs::rename(ro.join("README"), ro.join("R"))),
        libc::EACCES
    );
    assert_eq!(
        errno(fs::hard_link(ro.join("README"), ro.join("R"))),
        libc::EACCES
    );
    assert_eq!(names(&project), ["README", "src"]);

    // A file inside, passed back through the mount: its own document.
    let inner = File::open(rw.join("src/main.rs")).unwrap();
    let own = t
        .proxy
        .add(Fd::from(inner.as_fd()), true, true)
        .await
        .unwrap();
    assert_ne!(&own, id);
    let (path, _) = t.proxy.info(&own).await.unwrap();
    let mut want = project
        .join("src/main.rs")
        .into_os_string()
        .into_encoded_bytes();
    want.push(0);
    assert_eq!(path, want);

    // The exported directory swapped for a symlink to another: nothing.
    let secret = t.files().join("secret");
    fs::create_dir(&secret).unwrap();
    fs::write(secret.join("README"), "SECRET").unwrap();
    fs::rename(&project, t.files().join("moved")).unwrap();
    std::os::unix::fs::symlink(&secret, &project).unwrap();
    assert!(fs::read_to_string(rw.join("README")).is_err());
    assert!(fs::read_dir(&rw).is_err());
}

#[zbus::proxy(
    interface = "org.freedesktop.portal.FileTransfer",
    default_service = "org.freedesktop.portal.Documents",
    default_path = "/org/freedesktop/portal/documents"
)]
trait FileTransfer {
    fn start_transfer(&self, options: HashMap<&str, zvariant::Value<'_>>) -> zbus::Result<String>;
    fn add_files(
        &self,
        key: &str,
        fds: &[Fd<'_>],
        options: HashMap<&str, zvariant::Value<'_>>,
    ) -> zbus::Result<()>;
    fn retrieve_files(
        &self,
        key: &str,
        options: HashMap<&str, zvariant::Value<'_>>,
    ) -> zbus::Result<Vec<String>>;
    fn stop_transfer(&self, key: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    fn transfer_closed(&self, key: String) -> zbus::Result<()>;
    #[zbus(property, name = "version")]
    fn version(&self) -> zbus::Result<u32>;
}

/// A sandboxed client that runs its ops up to `["hold"]`, reports them,
/// and keeps its bus connection until released.
struct Holder {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    results: Vec<serde_json::Value>,
}

impl Holder {
    fn start(t: &Docs, app: &str, ops: serde_json::Value) -> Holder {
        let mut cmd = t.sandboxed_command(app, ops);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let results = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Holder {
            child,
            out,
            results,
        }
    }

    fn key(&self) -> String {
        self.results[0]["ok"]
            .as_str()
            .unwrap_or_else(|| panic!("{:?}", self.results))
            .to_owned()
    }

    /// Lets the client finish; its connection closes.
    fn release(mut self) {
        let _ = self.child.stdin.take().unwrap().write_all(b"\n");
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        assert!(self.child.wait().unwrap().success(), "{rest}");
    }
}

/// FileTransfer between two sandboxed apps (drag and drop): the source
/// starts a transfer and adds a file it opened; while it is connected, the
/// target retrieves a path under the mount that it can read (read-only: the
/// transfer was not writable) and the key is spent (autostop); only the
/// owner adds files; a writable transfer refuses a read-only fd; the host
/// gets plain paths; a transfer ends with its owner's connection, and
/// StopTransfer sends TransferClosed to the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_transfer_between_apps() {
    if !can_run_sandboxed_client("file_transfer_between_apps") {
        return;
    }
    let t = Docs::start().await;
    let ft = FileTransferProxy::new(&t.conn).await.unwrap();
    assert_eq!(ft.version().await.unwrap(), 1);
    let path = t.file("dragged.txt", "dropped content");
    let p = path.to_string_lossy().into_owned();
    let denied = "org.freedesktop.DBus.Error.AccessDenied";

    let source = Holder::start(
        &t,
        APP,
        serde_json::json!([["start", {}], ["addfiles", "$KEY", [p], "r"], ["hold"]]),
    );
    let key = source.key();
    assert!(
        source.results[1].get("ok").is_some(),
        "{:?}",
        source.results
    );
    // Only the owner adds files.
    let f = File::open(&path).unwrap();
    assert_eq!(
        err_name(
            ft.add_files(&key, &[Fd::from(f.as_fd())], HashMap::new())
                .await
        ),
        denied
    );
    let r = t.sandboxed(
        OTHER,
        serde_json::json!([["retrieve", key], ["retrieve", key]]),
    );
    let files = r[0]["ok"].as_array().unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(r[1]["err"], denied, "the key outlived its retrieval: {r:?}");
    assert_eq!(files.len(), 1);
    let got = PathBuf::from(files[0].as_str().unwrap());
    assert_eq!(got.file_name().unwrap(), "dragged.txt");
    assert_eq!(got.parent().unwrap().parent().unwrap(), t.mount());
    let id = got
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let view = t.app_view(OTHER, &id, "dragged.txt");
    assert_eq!(fs::read_to_string(&view).unwrap(), "dropped content");
    assert_eq!(
        app_open_errno(&view, OpenOptions::new().write(true)),
        libc::EACCES
    );
    assert_root_cannot_write(&view);
    assert_eq!(fs::read_to_string(&view).unwrap(), "dropped content");
    let (_, apps) = t.proxy.info(&id).await.unwrap();
    assert_eq!(apps[OTHER], ["read"]);
    // As upstream: the source's file is reopened O_PATH by the service at
    // retrieval, and the source's own grant follows what the service may
    // do with it (here write too), not the fd the source passed.
    assert_eq!(apps[APP], ["read", "write", "grant-permissions"]);
    source.release();

    // Writable transfers need writable fds.
    let r = t.sandboxed(
        APP,
        serde_json::json!([["start", {"writable": true}], ["addfiles", "$KEY", [p], "r"]]),
    );
    assert_eq!(
        r[1]["err"], "org.freedesktop.portal.Error.NotAllowed",
        "{r:?}"
    );

    // The host gets the plain path; without autostop the key stays until
    // its owner leaves the bus.
    let source = Holder::start(
        &t,
        APP,
        serde_json::json!([["start", {"autostop": false}], ["addfiles", "$KEY", [p], "r"], ["hold"]]),
    );
    let key = source.key();
    assert_eq!(
        ft.retrieve_files(&key, HashMap::new()).await.unwrap(),
        std::slice::from_ref(&p)
    );
    assert_eq!(
        ft.retrieve_files(&key, HashMap::new()).await.unwrap(),
        std::slice::from_ref(&p)
    );
    source.release();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ft.retrieve_files(&key, HashMap::new()).await.is_ok() {
        assert!(Instant::now() < deadline, "a transfer outlived its owner");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // StopTransfer: TransferClosed reaches the owner.
    let mut closed = ft.receive_transfer_closed().await.unwrap();
    let key = ft.start_transfer(HashMap::new()).await.unwrap();
    ft.stop_transfer(&key).await.unwrap();
    let signal = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut closed),
    )
    .await
    .expect("TransferClosed")
    .unwrap();
    assert_eq!(signal.args().unwrap().key, key);
    assert_eq!(err_name(ft.stop_transfer(&key).await), denied);
}

/// FileTransfer's live object against Debian's copy of upstream's XML.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_transfer_object_serves_upstreams_interface() {
    conforms(
        "the_file_transfer_object_serves_upstreams_interface",
        "org.freedesktop.portal.FileTransfer",
    )
    .await;
}

/// A document whose real file never answers a read holds one reader, not
/// the mount: other documents still read, and the service still answers
/// on the bus and stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_real_file_does_not_stall_the_mount() {
    if !can_run("a_hanging_real_file_does_not_stall_the_mount") {
        return;
    }
    let mut t = Docs::start().await;
    let stuck_dir = t.bus.root().join("stuck");
    fs::create_dir(&stuck_dir).unwrap();
    let stuck_fs = porthole_tests::stuck_fuse::mount(&stuck_dir, "porthole-stuck");
    let stuck = t.export(&stuck_dir.join("info"), APP, &["read"]).await;
    let fine = t
        .export(&t.file("fine.txt", "still served"), APP, &["read"])
        .await;

    let hanging = t.app_view(APP, &stuck, "info");
    let reader = std::thread::spawn(move || fs::read(hanging));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!reader.is_finished(), "the stuck read returned");

    let view = t.app_view(APP, &fine, "fine.txt");
    let read = tokio::task::spawn_blocking(move || fs::read_to_string(view));
    let content = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a read of another document waited for the stuck one")
        .unwrap()
        .unwrap();
    assert_eq!(content, "still served");
    tokio::time::timeout(Duration::from_secs(5), t.proxy.list(""))
        .await
        .expect("the bus side waited for the stuck read")
        .unwrap();

    // SIGTERM ends the service with the read still stuck; the reader then
    // gets an error, not a hang.
    t.stop_docs(libc::SIGTERM);
    let result = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    drop(stuck_fs);
}
