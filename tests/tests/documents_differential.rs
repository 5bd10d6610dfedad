//! Differential test of the document store: one scripted sequence of D-Bus
//! calls and file accesses on the FUSE mount, run against Debian's
//! `xdg-document-portal` (the anchor) and against `porthole-documents`,
//! each on its own private bus with our permission store behind it. Each
//! run records a transcript (step name, observation); document ids (random)
//! are named after the step that first returned them (`doc12` for step 12;
//! `doc54.1` for a step's second new id), so a document that only one store
//! makes shifts no other name, and the test's private directory becomes
//! `$ROOT`. Steps that end the anchor (1.16 dies on a write-only fd) and
//! those that make documents in one store only come last. The transcripts must be
//! equal except for the differences listed in [`EXPECTED`], each with its
//! reason; those must show up exactly as listed.
//!
//! Root only (CI runs as root): both stores mount FUSE themselves.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use porthole_tests::process::without_capabilities;
use porthole_tests::{Bus, Service, bin};
use zvariant::{Fd, OwnedValue};

const ANCHOR: &str = "/usr/libexec/xdg-document-portal";
const DOCUMENTS: &str = "org.freedesktop.portal.Documents";
const DOCUMENTS_PATH: &str = "/org/freedesktop/portal/documents";
const APP: &str = "org.example.Reader";
const OTHER: &str = "org.example.Other";

/// AddFull's flags.
const REUSE: u32 = 1;
const PERSISTENT: u32 = 2;
const AS_NEEDED: u32 = 4;
const EXPORT_DIR: u32 = 8;

/// The differences we keep on purpose (or know of): step, what the anchor
/// shows, what ours shows, why. Each must appear exactly so; any other
/// difference fails the test. `$ID` is a new document first returned by
/// this step, `$ID(STEP)` the one first returned by step STEP.
const EXPECTED: &[(&str, &str, &str, &str)] = &[
    (
        "version",
        "Ok(OwnedValue(U32(4)))",
        "Ok(OwnedValue(U32(5)))",
        "Debian's 1.16 has version 4; ours is 1.20's version 5",
    ),
    (
        "GetHostPaths",
        "error org.freedesktop.DBus.Error.UnknownMethod",
        r#"ok {"$ID(Add c.txt)": "\"$ROOT/files/c.txt\\0\""}"#,
        "GetHostPaths came with version 5; unknown ids are left out, as upstream",
    ),
    (
        "xattr host-path of doc/D/d.txt",
        "errno 61 (ENODATA)",
        r#"ok "$ROOT/files/d.txt""#,
        "user.document-portal.host-path came in 1.18",
    ),
    (
        "xattr host-path of doc/D",
        "errno 61 (ENODATA)",
        r#"ok "$ROOT/files""#,
        "the same attribute on the document's directory names the host directory (1.18)",
    ),
    (
        "xattr host-path of by-app/APP/D/d.txt",
        "errno 61 (ENODATA)",
        r#"ok "$ROOT/files/d.txt""#,
        "the same attribute in an app's view (1.18)",
    ),
    (
        "read fd opened before revoke",
        r#"ok "restored\n""#,
        "errno 13 (EACCES)",
        "document-fuse/README.md: a revocation also ends access through files already open",
    ),
    (
        "AddNamed \"..\\0\"",
        "ok $ID",
        "error org.freedesktop.portal.Error.InvalidArgument",
        "document-fuse/README.md: we refuse . and .. as file names (upstream only \"\" and /)",
    ),
    (
        "AddNamedFull \"..\\0\"",
        r#"ok $ID mountpoint="$ROOT/runtime/doc\0""#,
        "error org.freedesktop.portal.Error.InvalidArgument",
        "as AddNamed: .. is no file name",
    ),
    (
        "AddNamed \".\\0\"",
        "ok $ID",
        "error org.freedesktop.portal.Error.InvalidArgument",
        "as AddNamed: . is no file name",
    ),
    (
        "AddNamedFull \".\\0\"",
        r#"ok $ID mountpoint="$ROOT/runtime/doc\0""#,
        "error org.freedesktop.portal.Error.InvalidArgument",
        "as AddNamed: . is no file name",
    ),
    (
        "AddFull invalid app id",
        r#"ok ["$ID"] mountpoint="$ROOT/runtime/doc\0""#,
        "error org.freedesktop.portal.Error.InvalidArgument",
        "document-fuse/README.md: AddFull checks a non-empty target app id (upstream stores any string)",
    ),
    (
        "Add O_WRONLY",
        "error org.freedesktop.DBus.Error.NoReply",
        "error org.freedesktop.portal.Error.InvalidArgument",
        "upstream bug: 1.16's fd check returns NULL for a write-only fd without setting its GError, and the daemon dies on it; ours refuses it",
    ),
    (
        "GetMountPoint after Add O_WRONLY",
        "error org.freedesktop.DBus.Error.ServiceUnknown",
        r#"ok "$ROOT/runtime/doc\0""#,
        "upstream 1.16 is gone after the write-only fd; ours still serves",
    ),
];

/// Info's reply: the host path and each app's permissions.
type InfoReply = (Vec<u8>, HashMap<String, Vec<String>>);

/// One store under test on its own bus, and the transcript of its run.
struct Side {
    bus: Bus,
    conn: zbus::Connection,
    docs: Service,
    _store: Service,
    /// Document ids in order of first appearance, each with the name it
    /// has in the transcript: `doc` and the index of the step that first
    /// returned it (`.1`, `.2` for further ids of that step), so a
    /// document one store makes and the other refuses shifts no other name.
    ids: Vec<(String, String)>,
    /// The ids each adding step returned (none on an error).
    added: Vec<(String, Vec<String>)>,
    transcript: Vec<(String, String)>,
}

impl Side {
    async fn start(program: &Path) -> Side {
        let bus = Bus::start();
        let (store, docs) = bus.start_document_store(program, true).await;
        let conn = bus.connection().await;
        fs::create_dir_all(bus.root().join("files/dir/sub")).unwrap();
        Side {
            bus,
            conn,
            docs,
            _store: store,
            ids: Vec::new(),
            added: Vec::new(),
            transcript: Vec::new(),
        }
    }

    fn files(&self) -> PathBuf {
        self.bus.root().join("files")
    }

    fn mount(&self) -> PathBuf {
        self.bus.runtime_dir().join("doc")
    }

    /// A host file with `content`.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.files().join(name);
        fs::write(&p, content).unwrap();
        p
    }

    /// The real id of ordinal `n`.
    fn id(&self, n: usize) -> &str {
        &self.ids[n].0
    }

    /// A path on the mount, `$DOC{n}` in `rel` standing for ordinal `n`'s
    /// real id.
    fn on_mount(&self, rel: &str) -> PathBuf {
        let mut s = rel.to_owned();
        for (n, (id, _)) in self.ids.iter().enumerate().rev() {
            s = s.replace(&format!("$DOC{n}"), id);
        }
        self.mount().join(s)
    }

    /// Registers ids seen in a reply.
    fn learn(&mut self, id: &str) {
        if !id.is_empty() && !self.ids.iter().any(|(i, _)| i == id) {
            let step = format!("doc{}", self.transcript.len());
            let same_step = self
                .ids
                .iter()
                .filter(|(_, n)| *n == step || n.starts_with(&format!("{step}.")))
                .count();
            let name = match same_step {
                0 => step,
                k => format!("{step}.{k}"),
            };
            self.ids.push((id.to_owned(), name));
        }
    }

    /// `text` with the private root as `$ROOT` and every whole word that is
    /// a known document id as its ordinal.
    fn normalize(&self, text: &str) -> String {
        let text = text.replace(&*self.bus.root().to_string_lossy(), "$ROOT");
        let mut out = String::new();
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut String| {
            match self.ids.iter().find(|(i, _)| i == word) {
                Some((_, name)) => out.push_str(name),
                None => out.push_str(word),
            }
            word.clear();
        };
        for c in text.chars() {
            if c.is_ascii_alphanumeric() {
                word.push(c);
            } else {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
        flush(&mut word, &mut out);
        out
    }

    /// Adds a step to the transcript; a repeated step name gets ` #2`, ...
    fn record(&mut self, step: &str, observation: String) {
        let obs = self.normalize(&observation);
        let repeats = self
            .transcript
            .iter()
            .filter(|(s, _)| s == step || s.starts_with(&format!("{step} #")))
            .count();
        let step = match repeats {
            0 => step.to_owned(),
            n => format!("{step} #{}", n + 1),
        };
        self.transcript.push((step, obs));
    }

    /// Calls a Documents method with any body; the reply's body as `R`, or
    /// the error name.
    async fn call<B, R>(&self, method: &str, body: &B) -> Result<R, String>
    where
        B: serde::Serialize + zvariant::DynamicType,
        R: for<'d> zvariant::DynamicDeserialize<'d>,
    {
        match self
            .conn
            .call_method(
                Some(DOCUMENTS),
                DOCUMENTS_PATH,
                Some(DOCUMENTS),
                method,
                body,
            )
            .await
        {
            Ok(reply) => reply
                .body()
                .deserialize::<R>()
                .map_err(|e| format!("reply of another type: {e}")),
            Err(zbus::Error::MethodError(name, _, _)) => Err(format!("error {name}")),
            Err(e) => Err(format!("transport error {e}")),
        }
    }

    /// A call whose reply is a document id (Add, AddNamed): records it.
    async fn add_call<B>(&mut self, step: &str, method: &str, body: &B)
    where
        B: serde::Serialize + zvariant::DynamicType,
    {
        let r: Result<String, String> = self.call(method, body).await;
        if let Ok(id) = &r {
            self.learn(id);
        }
        self.added
            .push((step.to_owned(), r.iter().cloned().collect()));
        self.record(step, show(r.map(|id| format!("ok {id}"))));
    }

    /// AddFull: records the ids, and the extra keys with the mount point.
    async fn add_full(
        &mut self,
        step: &str,
        fds: &[Fd<'_>],
        flags: u32,
        app: &str,
        perms: &[&str],
    ) {
        let r: Result<(Vec<String>, HashMap<String, OwnedValue>), String> =
            self.call("AddFull", &(fds, flags, app, perms)).await;
        if let Ok((ids, _)) = &r {
            for id in ids {
                self.learn(id);
            }
        }
        let ids = r.as_ref().map(|(ids, _)| ids.clone()).unwrap_or_default();
        self.added.push((step.to_owned(), ids));
        self.record(
            step,
            show(r.map(|(ids, extra)| format!("ok {ids:?} {}", extra_text(&extra)))),
        );
    }

    async fn add_named_full(
        &mut self,
        step: &str,
        fd: Fd<'_>,
        name: &[u8],
        flags: u32,
        app: &str,
        perms: &[&str],
    ) {
        let r: Result<(String, HashMap<String, OwnedValue>), String> = self
            .call("AddNamedFull", &(fd, name, flags, app, perms))
            .await;
        if let Ok((id, _)) = &r {
            self.learn(id);
        }
        let ids = r.iter().map(|(id, _)| id.clone()).collect();
        self.added.push((step.to_owned(), ids));
        self.record(
            step,
            show(r.map(|(id, extra)| format!("ok {id} {}", extra_text(&extra)))),
        );
    }

    /// A call with no reply value worth more than ok / the error name.
    async fn plain<B>(&mut self, step: &str, method: &str, body: &B)
    where
        B: serde::Serialize + zvariant::DynamicType,
    {
        let r = match self
            .conn
            .call_method(
                Some(DOCUMENTS),
                DOCUMENTS_PATH,
                Some(DOCUMENTS),
                method,
                body,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(zbus::Error::MethodError(name, _, _)) => Err(format!("error {name}")),
            Err(e) => Err(format!("transport error {e}")),
        };
        self.record(step, show(r.map(|()| "ok".to_owned())));
    }

    async fn info(&mut self, step: &str, n: usize) {
        let id = self.id(n).to_owned();
        self.info_of(step, &id).await;
    }

    async fn info_of(&mut self, step: &str, id: &str) {
        let r: Result<InfoReply, String> = self.call("Info", &(id,)).await;
        self.record(
            step,
            show(r.map(|(path, apps)| {
                let apps: BTreeMap<_, _> = apps.into_iter().collect();
                format!("ok {} {apps:?}", bytes(&path))
            })),
        );
    }

    async fn list(&mut self, step: &str, app: &str) {
        let r: Result<HashMap<String, Vec<u8>>, String> = self.call("List", &(app,)).await;
        let r = r.map(|m| {
            let mut v: Vec<String> = m
                .into_iter()
                .map(|(id, p)| format!("{} => {}", self.normalize(&id), bytes(&p)))
                .collect();
            v.sort();
            format!("ok {v:?}")
        });
        self.record(step, show(r));
    }

    async fn lookup(&mut self, step: &str, path: &Path) {
        let r: Result<String, String> = self.call("Lookup", &(nul(path),)).await;
        self.record(step, show(r.map(|id| format!("ok {id:?}"))));
    }

    /// Sorted names in a directory on the mount (or anywhere), or errno.
    fn listing(&mut self, step: &str, dir: &Path) {
        let r = fs::read_dir(dir).and_then(|it| {
            let mut names = Vec::new();
            for e in it {
                names.push(temp_name(&e?.file_name().to_string_lossy()));
            }
            Ok(names)
        });
        let r = r.map(|mut v| {
            let mut v: Vec<String> = v.drain(..).map(|n| self.normalize(&n)).collect();
            v.sort();
            format!("ok {v:?}")
        });
        self.record(step, io(r));
    }

    /// File type and permission bits, or errno.
    fn mode(&mut self, step: &str, path: &Path) {
        let r = fs::symlink_metadata(path).map(|m| format!("ok {:o}", m.mode()));
        self.record(step, io(r));
    }

    /// `user.document-portal.host-path`, or errno.
    fn xattr(&mut self, step: &str, path: &Path) {
        let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let name = c"user.document-portal.host-path";
        let mut buf = vec![0u8; 4096];
        // SAFETY: both strings are NUL-terminated and live across the
        // call; buf is writable for buf.len() bytes.
        let n = unsafe {
            libc::getxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let r = if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(format!("ok {}", bytes(&buf[..n as usize])))
        };
        self.record(step, io(r));
    }

    fn read(&mut self, step: &str, path: &Path) {
        let r = fs::read_to_string(path).map(|s| format!("ok {s:?}"));
        self.record(step, io(r));
    }
}

fn show(r: Result<String, String>) -> String {
    r.unwrap_or_else(|e| e)
}

fn io(r: std::io::Result<String>) -> String {
    r.unwrap_or_else(|e| match e.raw_os_error() {
        Some(n) => format!("errno {n} ({})", errno_name(n)),
        None => format!("error {e}"),
    })
}

fn errno_name(n: i32) -> &'static str {
    match n {
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EROFS => "EROFS",
        libc::EEXIST => "EEXIST",
        libc::EISDIR => "EISDIR",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        libc::EXDEV => "EXDEV",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENODATA => "ENODATA",
        _ => "?",
    }
}

/// A byte-string path for D-Bus, NUL-terminated.
fn nul(path: &Path) -> Vec<u8> {
    let mut v = path.as_os_str().as_encoded_bytes().to_vec();
    v.push(0);
    v
}

fn bytes(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

/// The keys of AddFull's extra output, and the mount point's shape.
fn extra_text(extra: &HashMap<String, OwnedValue>) -> String {
    let mut keys: Vec<String> = extra
        .iter()
        .map(|(k, v)| match Vec::<u8>::try_from(v.try_clone().unwrap()) {
            Ok(b) => format!("{k}={}", bytes(&b)),
            Err(_) => k.clone(),
        })
        .collect();
    keys.sort();
    keys.join(",")
}

/// Upstream's temporary files are `.xdp-NAME-XXXXXX` with six random
/// characters; those become `XXXXXX`.
fn temp_name(name: &str) -> String {
    if name.starts_with(".xdp-") && name.len() > 12 {
        format!("{}XXXXXX", &name[..name.len() - 6])
    } else {
        name.to_owned()
    }
}

fn open_path_nofollow(path: &Path) -> OwnedFd {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .unwrap()
        .into()
}

fn open_path(path: &Path) -> OwnedFd {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .unwrap()
        .into()
}

/// The script, the same for both stores.
async fn script(s: &mut Side) {
    // The interface.
    let version: Result<OwnedValue, String> = match s
        .conn
        .call_method(
            Some(DOCUMENTS),
            DOCUMENTS_PATH,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(DOCUMENTS, "version"),
        )
        .await
    {
        Ok(m) => m.body().deserialize().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    s.record("version", format!("{version:?}"));
    let mp: Result<Vec<u8>, String> = s.call("GetMountPoint", &()).await;
    s.record(
        "GetMountPoint",
        show(mp.map(|b| format!("ok {}", bytes(&b)))),
    );

    // Add: reuse-existing and persistent.
    let a = s.file("a.txt", "alpha\n");
    let fa = File::open(&a).unwrap();
    for (reuse, persistent) in [
        (true, true),
        (true, true),
        (false, true),
        (true, false),
        (false, false),
        (true, false),
    ] {
        s.add_call(
            &format!("Add reuse={reuse} persistent={persistent}"),
            "Add",
            &(Fd::from(fa.as_fd()), reuse, persistent),
        )
        .await;
    }
    // An O_PATH fd, readable through its path.
    let b = s.file("b.txt", "bravo\n");
    s.add_call(
        "Add O_PATH",
        "Add",
        &(Fd::from(open_path(&b).as_fd()), true, true),
    )
    .await;
    s.add_call(
        "Add O_PATH again",
        "Add",
        &(Fd::from(File::open(&b).unwrap().as_fd()), true, true),
    )
    .await;

    // Bad fds.
    let (pr, _pw) = pipe();
    s.add_call("Add pipe", "Add", &(Fd::from(pr.as_fd()), true, true))
        .await;
    let (sa, _sb) = std::os::unix::net::UnixStream::pair().unwrap();
    s.add_call("Add socket", "Add", &(Fd::from(sa.as_fd()), true, true))
        .await;
    std::os::unix::fs::symlink(&b, s.files().join("link")).unwrap();
    let nofollow = open_path_nofollow(&s.files().join("link"));
    s.add_call(
        "Add O_PATH|O_NOFOLLOW symlink",
        "Add",
        &(Fd::from(nofollow.as_fd()), true, true),
    )
    .await;
    let nofollow_file = open_path_nofollow(&b);
    s.add_call(
        "Add O_PATH|O_NOFOLLOW file",
        "Add",
        &(Fd::from(nofollow_file.as_fd()), true, true),
    )
    .await;
    let gone = s.file("gone.txt", "gone");
    let fgone = File::open(&gone).unwrap();
    fs::remove_file(&gone).unwrap();
    s.add_call(
        "Add deleted file",
        "Add",
        &(Fd::from(fgone.as_fd()), true, true),
    )
    .await;
    let dir = File::open(s.files().join("dir")).unwrap();
    s.add_call("Add directory", "Add", &(Fd::from(dir.as_fd()), true, true))
        .await;

    // AddNamed: the name need not exist; bad names.
    let parent = File::open(s.files()).unwrap();
    let parent_path = open_path(&s.files());
    for (reuse, persistent) in [(true, true), (true, true), (false, true), (true, false)] {
        s.add_call(
            &format!("AddNamed new.txt reuse={reuse} persistent={persistent}"),
            "AddNamed",
            &(
                Fd::from(parent.as_fd()),
                b"new.txt\0".as_slice(),
                reuse,
                persistent,
            ),
        )
        .await;
    }
    s.add_call(
        "AddNamed existing a.txt",
        "AddNamed",
        &(
            Fd::from(parent_path.as_fd()),
            b"a.txt\0".as_slice(),
            true,
            true,
        ),
    )
    .await;
    for name in [&b"a/b\0"[..], b"\0", b"", b"dir\0"] {
        s.add_call(
            &format!("AddNamed {:?}", String::from_utf8_lossy(name)),
            "AddNamed",
            &(Fd::from(parent.as_fd()), name, true, true),
        )
        .await;
    }
    let file_as_parent = File::open(&a).unwrap();
    s.add_call(
        "AddNamed parent is a file",
        "AddNamed",
        &(
            Fd::from(file_as_parent.as_fd()),
            b"x\0".as_slice(),
            true,
            true,
        ),
    )
    .await;
    s.add_call(
        "AddNamed parent is a pipe",
        "AddNamed",
        &(Fd::from(pr.as_fd()), b"x\0".as_slice(), true, true),
    )
    .await;

    // AddFull: every flag combination on a fresh file, then on a
    // directory.
    for flags in 0..16u32 {
        let f = File::open(s.file(&format!("full{flags}.txt"), "full\n")).unwrap();
        s.add_full(
            &format!("AddFull file flags={flags}"),
            &[Fd::from(f.as_fd())],
            flags,
            APP,
            &["read"],
        )
        .await;
        if flags & REUSE != 0 {
            s.add_full(
                &format!("AddFull file flags={flags} again"),
                &[Fd::from(f.as_fd())],
                flags,
                APP,
                &["read"],
            )
            .await;
        }
    }
    for flags in [
        EXPORT_DIR,
        EXPORT_DIR | PERSISTENT,
        EXPORT_DIR | PERSISTENT | REUSE,
    ] {
        let d = File::open(s.files().join("dir")).unwrap();
        s.add_full(
            &format!("AddFull dir flags={flags}"),
            &[Fd::from(d.as_fd())],
            flags,
            APP,
            &["read", "write"],
        )
        .await;
    }
    let f0 = File::open(&a).unwrap();
    let f1 = File::open(&b).unwrap();
    s.add_full(
        "AddFull two files",
        &[Fd::from(f0.as_fd()), Fd::from(f1.as_fd())],
        PERSISTENT | REUSE,
        OTHER,
        &[],
    )
    .await;
    s.add_full("AddFull no fds", &[], PERSISTENT, APP, &["read"])
        .await;
    s.add_full(
        "AddFull flags=16",
        &[Fd::from(f0.as_fd())],
        16,
        APP,
        &["read"],
    )
    .await;
    s.add_full(
        "AddFull bad permission",
        &[Fd::from(f0.as_fd())],
        PERSISTENT,
        APP,
        &["fly"],
    )
    .await;
    s.add_full(
        "AddFull all permissions",
        &[Fd::from(f0.as_fd())],
        PERSISTENT,
        APP,
        &["read", "write", "grant-permissions", "delete"],
    )
    .await;
    s.add_full(
        "AddFull host app with permissions",
        &[Fd::from(f0.as_fd())],
        PERSISTENT,
        "",
        &["read"],
    )
    .await;
    s.add_full(
        "AddFull pipe",
        &[Fd::from(pr.as_fd())],
        PERSISTENT,
        APP,
        &["read"],
    )
    .await;

    // AddNamedFull.
    for flags in [
        0,
        REUSE,
        PERSISTENT,
        REUSE | PERSISTENT,
        REUSE | PERSISTENT,
        AS_NEEDED | PERSISTENT,
        EXPORT_DIR | PERSISTENT,
        16,
    ] {
        s.add_named_full(
            &format!("AddNamedFull named.txt flags={flags}"),
            Fd::from(parent.as_fd()),
            b"named.txt\0",
            flags,
            APP,
            &["read", "write"],
        )
        .await;
    }
    for name in [&b"a/b\0"[..], b"\0"] {
        s.add_named_full(
            &format!("AddNamedFull {:?}", String::from_utf8_lossy(name)),
            Fd::from(parent.as_fd()),
            name,
            PERSISTENT,
            APP,
            &["read"],
        )
        .await;
    }

    // Queries.
    for (step, ids) in s.added.clone() {
        let step = format!("Info after {step}");
        if ids.is_empty() {
            s.record(&step, "no document".to_owned());
        }
        for id in ids {
            s.info_of(&step, &id).await;
        }
    }
    s.info_of("Info unknown id", "ffffffff").await;
    s.info_of("Info empty id", "").await;
    s.list("List host", "").await;
    s.list("List APP", APP).await;
    s.list("List OTHER", OTHER).await;
    s.list("List unknown app", "org.example.Nobody").await;
    let c = s.file("c.txt", "charlie\n");
    s.lookup("Lookup c.txt before its Add", &c).await;
    let fc = File::open(&c).unwrap();
    s.add_call("Add c.txt", "Add", &(Fd::from(fc.as_fd()), true, true))
        .await;
    let c_id = s.ids.last().unwrap().0.clone();
    s.lookup("Lookup c.txt", &c).await;
    s.lookup("Lookup missing", &s.files().join("missing")).await;
    s.lookup("Lookup relative", Path::new("files/c.txt")).await;
    let c_on_mount = s.mount().join(&c_id).join("c.txt");
    s.lookup("Lookup c.txt on the mount", &c_on_mount).await;
    s.lookup("Lookup doc dir on the mount", &s.mount().join(&c_id))
        .await;
    let c_in_app = s.mount().join("by-app").join(APP).join(&c_id).join("c.txt");
    s.lookup("Lookup c.txt in APP's view", &c_in_app).await;

    // Grants and revocations on c.txt.
    let c_n = s.ids.len() - 1;
    s.listing(
        "ls by-app/APP/c before grant",
        &s.mount().join("by-app").join(APP).join(&c_id),
    );
    s.plain(
        "Grant c read to APP",
        "GrantPermissions",
        &(&c_id, APP, &["read"][..]),
    )
    .await;
    s.plain(
        "Grant c write to OTHER",
        "GrantPermissions",
        &(&c_id, OTHER, &["write"][..]),
    )
    .await;
    s.plain(
        "Grant c bad permission",
        "GrantPermissions",
        &(&c_id, APP, &["fly"][..]),
    )
    .await;
    s.plain(
        "Grant c empty list",
        "GrantPermissions",
        &(&c_id, APP, &[] as &[&str]),
    )
    .await;
    s.plain(
        "Grant unknown id",
        "GrantPermissions",
        &("ffffffff", APP, &["read"][..]),
    )
    .await;
    s.plain(
        "Grant c to host app",
        "GrantPermissions",
        &(&c_id, "", &["read"][..]),
    )
    .await;
    s.plain(
        "Grant c to invalid app id",
        "GrantPermissions",
        &(&c_id, "not an app", &["read"][..]),
    )
    .await;
    s.info("Info c after grants", c_n).await;
    s.plain(
        "Revoke c write from OTHER",
        "RevokePermissions",
        &(&c_id, OTHER, &["write"][..]),
    )
    .await;
    s.plain(
        "Revoke c write from APP (not held)",
        "RevokePermissions",
        &(&c_id, APP, &["write"][..]),
    )
    .await;
    s.plain(
        "Revoke unknown id",
        "RevokePermissions",
        &("ffffffff", APP, &["read"][..]),
    )
    .await;
    s.plain(
        "Revoke c bad permission",
        "RevokePermissions",
        &(&c_id, APP, &["fly"][..]),
    )
    .await;
    s.info("Info c after revokes", c_n).await;

    // Wrong argument types and counts.
    s.plain("Add wrong types", "Add", &("x", true, true)).await;
    s.plain("Add too few", "Add", &(Fd::from(fc.as_fd()),))
        .await;
    s.plain("Info wrong type", "Info", &(7u32,)).await;
    s.plain("Info no args", "Info", &()).await;
    s.plain("Lookup string", "Lookup", &("/etc/passwd",)).await;
    s.plain(
        "Grant wrong types",
        "GrantPermissions",
        &(&c_id, APP, "read"),
    )
    .await;
    s.plain(
        "AddFull flags as string",
        "AddFull",
        &(&[Fd::from(fc.as_fd())][..], "2", APP, &["read"][..]),
    )
    .await;
    s.plain("Delete wrong type", "Delete", &(true,)).await;
    s.plain("NoSuchMethod", "NoSuchMethod", &()).await;
    let hp: Result<HashMap<String, Vec<u8>>, String> = s
        .call("GetHostPaths", &(&[c_id.as_str(), "ffffffff"][..],))
        .await;
    let hp = hp.map(|m| {
        let m: BTreeMap<String, String> = m.into_iter().map(|(k, v)| (k, bytes(&v))).collect();
        format!("ok {m:?}")
    });
    s.record("GetHostPaths", show(hp));

    files_script(s).await;

    // Delete.
    s.plain("Delete c", "Delete", &(&c_id,)).await;
    s.plain("Delete c again", "Delete", &(&c_id,)).await;
    s.plain("Delete unknown", "Delete", &("ffffffff",)).await;
    s.info("Info c after delete", c_n).await;
    s.listing("ls doc/c after delete", c_on_mount.parent().unwrap());
    s.read("read doc/c/c.txt after delete", &c_on_mount);
    s.listing(
        "ls by-app/APP after delete",
        &s.mount().join("by-app").join(APP),
    );
    s.lookup("Lookup c.txt after delete", &c).await;
    s.list("List host at the end", "").await;

    deliberate(s).await;

    // Last, as it ends xdg-document-portal 1.16.
    let wronly = OpenOptions::new()
        .write(true)
        .open(s.file("w.txt", ""))
        .unwrap();
    s.add_call(
        "Add O_WRONLY",
        "Add",
        &(Fd::from(wronly.as_fd()), true, true),
    )
    .await;
    let mp: Result<Vec<u8>, String> = s.call("GetMountPoint", &()).await;
    s.record(
        "GetMountPoint after Add O_WRONLY",
        show(mp.map(|b| format!("ok {}", bytes(&b)))),
    );
}

/// The calls where we differ on purpose (see [`EXPECTED`]), after the
/// listings so the documents they make in one store only show nowhere else.
async fn deliberate(s: &mut Side) {
    let parent = File::open(s.files()).unwrap();
    for name in [&b"..\0"[..], b".\0"] {
        s.add_call(
            &format!("AddNamed {:?}", String::from_utf8_lossy(name)),
            "AddNamed",
            &(Fd::from(parent.as_fd()), name, true, true),
        )
        .await;
        s.add_named_full(
            &format!("AddNamedFull {:?}", String::from_utf8_lossy(name)),
            Fd::from(parent.as_fd()),
            name,
            PERSISTENT,
            APP,
            &["read"],
        )
        .await;
    }
    let f0 = File::open(s.files().join("a.txt")).unwrap();
    s.add_full(
        "AddFull invalid app id",
        &[Fd::from(f0.as_fd())],
        PERSISTENT,
        "not an app",
        &["read"],
    )
    .await;
}

/// File observations through the mount.
async fn files_script(s: &mut Side) {
    let m = s.mount();
    s.mode("mode doc/", &m);
    s.mode("mode doc/by-app", &m.join("by-app"));
    s.mode("mode doc/by-app/APP", &m.join("by-app").join(APP));
    s.listing("ls doc/", &m);
    s.listing("ls doc/by-app", &m.join("by-app"));
    s.listing("ls doc/by-app/APP", &m.join("by-app").join(APP));
    s.listing("ls doc/by-app/OTHER", &m.join("by-app").join(OTHER));
    s.listing(
        "ls doc/by-app/org.example.Nobody",
        &m.join("by-app/org.example.Nobody"),
    );
    s.mode("mode doc/by-app/bad app id", &m.join("by-app/not an app"));
    s.mode("mode doc/ffffffff", &m.join("ffffffff"));

    // A document of its own: ro for APP, nothing for OTHER.
    let d = s.file("d.txt", "delta\n");
    let fd = File::open(&d).unwrap();
    s.add_full(
        "AddFull d.txt",
        &[Fd::from(fd.as_fd())],
        PERSISTENT,
        APP,
        &["read"],
    )
    .await;
    let n = s.ids.len() - 1;
    for (step, rel) in [
        ("doc/D", "$DOC"),
        ("doc/D/d.txt", "$DOC/d.txt"),
        ("doc/by-app/APP/D", "by-app/APP/$DOC"),
        ("doc/by-app/APP/D/d.txt", "by-app/APP/$DOC/d.txt"),
        ("doc/by-app/OTHER/D", "by-app/OTHER/$DOC"),
        ("doc/by-app/OTHER/D/d.txt", "by-app/OTHER/$DOC/d.txt"),
    ] {
        let p = s.on_mount(
            &rel.replace("$DOC", &format!("$DOC{n}"))
                .replace("APP", APP)
                .replace("OTHER", OTHER),
        );
        s.mode(&format!("mode {step} (ro grant)"), &p);
        if step.ends_with(".txt") {
            s.read(&format!("read {step}"), &p);
        } else {
            s.listing(&format!("ls {step}"), &p);
        }
    }
    let ro = s.on_mount(&format!("by-app/{APP}/$DOC{n}/d.txt"));
    s.record("open O_WRONLY through ro grant", app_open_for_writing(&ro));
    s.record("root writes through ro grant", io(root_write(&ro)));
    let r = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&ro)
        .map(|_| "ok".to_owned());
    s.record("open O_TRUNC through ro grant", io(r));
    let r = File::create(ro.with_file_name("new-in-ro")).map(|_| "ok".to_owned());
    s.record("create next to ro grant", io(r));
    let r = fs::rename(&ro, ro.with_file_name("renamed")).map(|_| "ok".to_owned());
    s.record("rename ro document", io(r));
    let r = fs::remove_file(&ro).map(|_| "ok".to_owned());
    s.record("unlink ro document", io(r));
    s.read("host d.txt after ro attempts", &d);

    // Read-write: write through, then safe save.
    let id = s.id(n).to_owned();
    s.plain(
        "Grant d write to APP",
        "GrantPermissions",
        &(&id, APP, &["write"][..]),
    )
    .await;
    let rw = s.on_mount(&format!("by-app/{APP}/$DOC{n}/d.txt"));
    s.mode("mode doc/by-app/APP/D (rw grant)", rw.parent().unwrap());
    s.mode("mode doc/by-app/APP/D/d.txt (rw grant)", &rw);
    let r = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&rw)
        .and_then(|mut f| f.write_all(b"written through\n"))
        .map(|()| "ok".to_owned());
    s.record("write through rw grant", io(r));
    s.read("host d.txt after write", &d);
    let tmp = rw.with_file_name(".goutputstream-ABC123");
    let r = File::create(&tmp)
        .and_then(|mut f| f.write_all(b"saved safely\n"))
        .map(|()| "ok".to_owned());
    s.record("safe save: create temp", io(r));
    s.mode("safe save: mode of temp", &tmp);
    s.listing("safe save: ls app doc dir with temp", rw.parent().unwrap());
    s.listing(
        "safe save: ls host doc dir with temp",
        &s.on_mount(&format!("$DOC{n}")),
    );
    s.listing("safe save: ls host dir with temp", &s.files());
    let r = fs::rename(&tmp, &rw).map(|()| "ok".to_owned());
    s.record("safe save: rename over document", io(r));
    s.read("safe save: host d.txt", &d);
    s.read("safe save: read through app view", &rw);
    s.listing("safe save: ls app doc dir after", rw.parent().unwrap());
    s.listing("safe save: ls host dir after", &s.files());
    s.mode("safe save: host d.txt mode", &d);
    let r = fs::remove_file(&rw).map(|_| "ok".to_owned());
    s.record("unlink document through rw grant", io(r));
    s.read("host d.txt after unlink attempt", &d);

    fs::write(&d, "restored\n").unwrap();
    s.read("read by-app/APP/D/d.txt after the host restores it", &rw);

    // The host-path attribute (upstream's since 1.18).
    let host_file = s.on_mount(&format!("$DOC{n}/d.txt"));
    s.xattr("xattr host-path of doc/D/d.txt", &host_file);
    s.xattr("xattr host-path of doc/D", host_file.parent().unwrap());
    s.xattr("xattr host-path of by-app/APP/D/d.txt", &rw);

    // Revoke: gone from the app's view, and from files it holds open.
    let held = File::open(&rw);
    s.record(
        "open by-app/APP/D/d.txt before revoke",
        match &held {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("errno {:?}", e.raw_os_error()),
        },
    );
    s.plain(
        "Revoke d read,write from APP",
        "RevokePermissions",
        &(&id, APP, &["read", "write"][..]),
    )
    .await;
    if let Ok(held) = &held {
        let mut buf = [0u8; 64];
        let r = std::os::unix::fs::FileExt::read_at(held, &mut buf, 0)
            .map(|k| format!("ok {:?}", String::from_utf8_lossy(&buf[..k])));
        s.record("read fd opened before revoke", io(r));
    }
    s.mode("mode by-app/APP/D after revoke", rw.parent().unwrap());
    s.read("read by-app/APP/D/d.txt after revoke", &rw);
    s.listing("ls by-app/APP after revoke", &m.join("by-app").join(APP));
    s.read(
        "read doc/D/d.txt after revoke",
        &s.on_mount(&format!("$DOC{n}/d.txt")),
    );

    // A directory document.
    let dir = s.files().join("dir");
    fs::write(dir.join("inner.txt"), "inner\n").unwrap();
    fs::write(dir.join("sub/deep.txt"), "deep\n").unwrap();
    let fdir = File::open(&dir).unwrap();
    s.add_full(
        "AddFull dir for files",
        &[Fd::from(fdir.as_fd())],
        PERSISTENT | EXPORT_DIR,
        OTHER,
        &["read"],
    )
    .await;
    let n = s.ids.len() - 1;
    for (step, rel) in [
        ("doc/DIR", "$DOC".to_owned()),
        ("doc/DIR/dir", "$DOC/dir".to_owned()),
        ("doc/DIR/dir/sub", "$DOC/dir/sub".to_owned()),
        (
            "doc/by-app/OTHER/DIR/dir",
            format!("by-app/{OTHER}/$DOC/dir"),
        ),
        ("doc/by-app/APP/DIR", format!("by-app/{APP}/$DOC")),
    ] {
        let p = s.on_mount(&rel.replace("$DOC", &format!("$DOC{n}")));
        s.mode(&format!("mode {step}"), &p);
        s.listing(&format!("ls {step}"), &p);
    }
    let inner = s.on_mount(&format!("by-app/{OTHER}/$DOC{n}/dir/inner.txt"));
    s.mode("mode doc/by-app/OTHER/DIR/dir/inner.txt", &inner);
    s.read("read doc/by-app/OTHER/DIR/dir/inner.txt", &inner);
    s.read(
        "read doc/by-app/OTHER/DIR/dir/sub/deep.txt",
        &s.on_mount(&format!("by-app/{OTHER}/$DOC{n}/dir/sub/deep.txt")),
    );
    let r = File::create(inner.with_file_name("made-by-ro")).map(|_| "ok".to_owned());
    s.record("create in ro directory document", io(r));
    s.record(
        "open O_WRONLY in ro directory document",
        app_open_for_writing(&inner),
    );
    s.record(
        "root writes in ro directory document",
        io(root_write(&inner)),
    );
    s.listing("ls doc/ at the end of files", &m);
}

/// An open for writing by a process holding no capabilities, as an app
/// holds none.
fn app_open_for_writing(path: &Path) -> String {
    let path = path.to_owned();
    let r = without_capabilities(move || {
        OpenOptions::new()
            .write(true)
            .open(&path)
            .map(|_| "ok".to_owned())
    });
    io(r)
}

/// Root opening for writing and writing: root passes over the modes, so
/// where the refusal comes differs (the anchor refuses the open, ours the
/// write: the kernel opens without asking us), not whether.
fn root_write(path: &Path) -> std::io::Result<String> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(b"root was here")?;
    Ok("ok".to_owned())
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the two-element array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

/// Runs the script against the store `program`: the transcript and the
/// store's log.
async fn run(program: &Path) -> (Vec<(String, String)>, String) {
    let mut side = Side::start(program).await;
    script(&mut side).await;
    let logs = side.docs.log_text();
    let _ = side.docs.stop();
    (std::mem::take(&mut side.transcript), logs)
}

/// `$ID(STEP)` in an expected observation as the name of the document
/// first returned by step STEP, `$ID` as the one first returned by `step`.
fn expand(expected: &str, step: &str, transcript: &[(String, String)]) -> String {
    let index = |name: &str| {
        transcript
            .iter()
            .position(|(s, _)| s == name)
            .unwrap_or_else(|| panic!("EXPECTED names an unknown step {name:?}"))
    };
    let mut out = expected.to_owned();
    while let Some(start) = out.find("$ID(") {
        let end = start + out[start..].find(')').expect("$ID( without )");
        let name = format!("doc{}", index(&out[start + 4..end]));
        out.replace_range(start..=end, &name);
    }
    out.replace("$ID", &format!("doc{}", index(step)))
}

fn transcript_text(t: &[(String, String)]) -> String {
    t.iter()
        .enumerate()
        .map(|(i, (step, obs))| format!("{i:3} {step}: {obs}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_behaves_like_xdg_document_portal() {
    if !porthole_tests::running_as_root("documents_differential") {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        porthole_tests::skipped("documents_differential: /dev/fuse is missing (modprobe fuse)");
        return;
    }
    if !porthole_tests::anchor_present(ANCHOR, "xdg-desktop-portal") {
        return;
    }
    let (theirs, their_log) = run(Path::new(ANCHOR)).await;
    let (ours, our_log) = run(&bin("porthole-documents")).await;
    let both = || {
        format!(
            "anchor transcript:\n{}\nour transcript:\n{}\nanchor log:\n{their_log}\nour log:\n{our_log}",
            transcript_text(&theirs),
            transcript_text(&ours)
        )
    };
    assert_eq!(
        theirs.iter().map(|(s, _)| s).collect::<Vec<_>>(),
        ours.iter().map(|(s, _)| s).collect::<Vec<_>>(),
        "the two runs took different steps\n{}",
        both()
    );
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for ((step, t), (_, o)) in theirs.iter().zip(&ours) {
        let expected = EXPECTED.iter().find(|e| e.0 == step);
        match expected {
            Some(&(_, et, eo, _)) => {
                seen.push(step.as_str());
                let (et, eo) = (expand(et, step, &theirs), expand(eo, step, &theirs));
                let (et, eo) = (et.as_str(), eo.as_str());
                if (t.as_str(), o.as_str()) != (et, eo) {
                    problems.push(format!(
                        "{step}:\n  anchor: {t}\n  ours:   {o}\n  listed: anchor {et}, ours {eo}"
                    ));
                }
            }
            None if t != o => {
                problems.push(format!("{step}:\n  anchor: {t}\n  ours:   {o}"));
            }
            None => {}
        }
    }
    for e in EXPECTED {
        if !seen.contains(&e.0) {
            problems.push(format!(
                "{}: listed as a difference but never observed",
                e.0
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} unexpected differences:\n{}\n\n{}",
        problems.len(),
        problems.join("\n"),
        both()
    );
    // Equal transcripts prove little if both stores failed alike: the
    // script must have reached what a user observes.
    let ours_at = |step: &str| {
        ours.iter()
            .find(|(s, _)| s == step)
            .map(|(_, o)| o.as_str())
            .unwrap_or_else(|| panic!("no step {step}"))
    };
    for (step, want) in [
        ("read doc/by-app/APP/D/d.txt", r#"ok "delta\n""#),
        ("open O_WRONLY through ro grant", "errno 13 (EACCES)"),
        ("root writes through ro grant", "errno 13 (EACCES)"),
        ("root writes in ro directory document", "errno 13 (EACCES)"),
        ("host d.txt after write", r#"ok "written through\n""#),
        ("safe save: host d.txt", r#"ok "saved safely\n""#),
        (
            "read doc/by-app/OTHER/DIR/dir/sub/deep.txt",
            r#"ok "deep\n""#,
        ),
        ("mode by-app/APP/D after revoke", "errno 2 (ENOENT)"),
        (
            "Delete unknown",
            "error org.freedesktop.portal.Error.NotFound",
        ),
        (
            "Add pipe",
            "error org.freedesktop.portal.Error.InvalidArgument",
        ),
        (
            "Info wrong type",
            "error org.freedesktop.DBus.Error.InvalidArgs",
        ),
        (
            "NoSuchMethod",
            "error org.freedesktop.DBus.Error.UnknownMethod",
        ),
    ] {
        assert_eq!(ours_at(step), want, "{step}\n{}", both());
    }
}
