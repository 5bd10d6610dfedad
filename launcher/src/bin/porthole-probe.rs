//! `porthole-probe`: runs inside `porthole run` and attacks the sandbox (the
//! escape battery, ../shared/security/escape-battery.md). Prints one JSON
//! object per line: `{"id": "P02.newuser", "result": "EPERM"}` where result
//! is the errno name, or "OK" when the call succeeded, plus extra fields
//! where a check reports data. The tests in launcher/tests/ judge the lines.
//!
//! Usage: porthole-probe battery                 all in-process checks
//!        porthole-probe connect-unix PATH       P15
//!        porthole-probe connect-tcp ID IP:PORT  P16
//!        porthole-probe connect-abstract NAME   P30 (abstract unix socket @NAME)
//!        porthole-probe kill-all                P09 (kills every process it may)
//!        porthole-probe scan                    P09 (kill(pid, 0) for every pid)
//!        porthole-probe exec PATH ARGS...       P18 (runs PATH, relays output)
//!        porthole-probe euid                    prints the effective uid
//!        porthole-probe sleep SECONDS           stays alive (ps/kill/enter)
//!        porthole-probe exit CODE               exits with CODE
//!        porthole-probe wait-term               exits 42 on SIGTERM
//!        porthole-probe demo                    human-readable summary
//!        porthole-probe stat PATH               inode and device of PATH
//!        porthole-probe fds                     FD: descriptors we were given
//!        porthole-probe abi                     ABI/DEVEL: what --allow opens
//!        porthole-probe home                    HOME.*: the home and app data
//!        porthole-probe net-connect MODE HOST PORT          NET: see probe/net.rs
//!        porthole-probe net-bench MODE HOST PORT N BULK_PORT

use std::ffi::CString;
use std::io::Write;

#[path = "probe/dbus.rs"]
mod dbus;
#[path = "probe/net.rs"]
mod net;

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EAGAIN => "EAGAIN",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTDIR => "ENOTDIR",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ENXIO => "ENXIO",
        libc::ELOOP => "ELOOP",
        libc::EXDEV => "EXDEV",
        other => return format!("errno{other}"),
    };
    name.to_owned()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// "OK" for a non-negative return, else the errno's name.
fn outcome(rc: i64) -> String {
    if rc >= 0 {
        "OK".into()
    } else {
        errno_name(last_errno())
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn report(id: &str, result: &str) {
    println!(
        "{{\"id\":{},\"result\":{}}}",
        json_str(id),
        json_str(result)
    );
}

fn report_with(id: &str, result: &str, extra: serde_json::Value) {
    let mut obj = serde_json::json!({ "id": id, "result": result });
    if let (Some(o), Some(e)) = (obj.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    println!("{obj}");
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// A raw syscall with up to six arguments.
fn sys(nr: libc::c_long, a: [u64; 6]) -> i64 {
    // SAFETY: every call site passes arguments that are either plain integers
    // or pointers to live, correctly sized buffers for that syscall; the probe
    // expects most of these calls to be refused before the kernel reads them.
    unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) as i64 }
}

/// An i386 syscall through `int 0x80` (the compat entry), in a child process
/// so that a kernel without ia32 emulation (SIGSEGV) cannot kill the probe.
/// Returns the raw result (-errno) or None when the ABI is unavailable.
fn i386_syscall(nr: u32, a0: u32, a1: u32, a2: u32) -> Option<i64> {
    let mut fds = [0; 2];
    // SAFETY: fds is a two-element array as pipe(2) requires.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: the probe is single-threaded; the child only does raw syscalls,
    // a write and _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ret: i32;
        // SAFETY: int 0x80 enters the kernel's i386 entry with eax = syscall
        // number and ebx/ecx/edx as arguments; rbx is reserved by LLVM, so it
        // is swapped in and out around the instruction. No memory is passed.
        unsafe {
            std::arch::asm!(
                "xchg {b:r}, rbx",
                "int 0x80",
                "xchg {b:r}, rbx",
                b = inout(reg) a0 as u64 => _,
                inlateout("eax") nr => ret,
                in("ecx") a1,
                in("edx") a2,
            );
        }
        let bytes = ret.to_ne_bytes();
        // SAFETY: writes 4 bytes from a live array to our pipe, then exits
        // without running the parent's destructors.
        unsafe {
            libc::write(fds[1], bytes.as_ptr().cast(), 4);
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut buf = [0u8; 4];
    // SAFETY: reads at most 4 bytes into `buf`.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 4) };
    // SAFETY: closing the read end we own.
    unsafe { libc::close(fds[0]) };
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    (n == 4).then(|| i32::from_ne_bytes(buf) as i64)
}

fn neg_errno(ret: i64) -> String {
    if ret >= 0 {
        "OK".into()
    } else {
        errno_name((-ret) as i32)
    }
}

const X32_BIT: libc::c_long = 0x4000_0000;

/// i386 `getpid`, `unshare(CLONE_NEWUSER)`, `keyctl` through `int 0x80`.
fn i386_checks() {
    for (id, nr, a0, a1) in [
        // getpid = 20: harmless, so it shows whether the ABI is open at all.
        ("ABI.i386_getpid", 20, 0, 0),
        // unshare = 310, keyctl = 288 (KEYCTL_GET_KEYRING_ID, session).
        ("ABI.i386_unshare", 310, libc::CLONE_NEWUSER as u32, 0),
        ("ABI.i386_keyctl", 288, 0, (-4i32) as u32),
    ] {
        match i386_syscall(nr, a0, a1, 0) {
            Some(r) => report(id, &neg_errno(r)),
            None => report(id, "SKIPPED_NO_IA32"),
        }
    }
}

/// DEVEL.ptrace_child: a debugger's first steps on our own child: attach,
/// see it stop, read a register, detach. "OK" only if all of that worked.
fn ptrace_child() -> String {
    // SAFETY: single-threaded; the child only pauses until killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    let result = (|| {
        let rc = sys(
            libc::SYS_ptrace,
            [libc::PTRACE_ATTACH as u64, child as u64, 0, 0, 0, 0],
        );
        if rc != 0 {
            return errno_name(last_errno());
        }
        let mut status = 0;
        // SAFETY: waiting for our own (now traced) child.
        let w = unsafe { libc::waitpid(child, &mut status, libc::__WALL) };
        if w != child || !libc::WIFSTOPPED(status) {
            return format!("NOT_STOPPED {status:#x}");
        }
        // PTRACE_PEEKUSER of offset 0 (r15); the raw syscall stores the
        // word at `data`.
        let mut word = 0u64;
        let rc = sys(
            libc::SYS_ptrace,
            [
                libc::PTRACE_PEEKUSER as u64,
                child as u64,
                0,
                &mut word as *mut u64 as u64,
                0,
                0,
            ],
        );
        if rc != 0 {
            return format!("PEEKUSER {}", errno_name(last_errno()));
        }
        let rc = sys(
            libc::SYS_ptrace,
            [libc::PTRACE_DETACH as u64, child as u64, 0, 0, 0, 0],
        );
        if rc != 0 {
            return format!("DETACH {}", errno_name(last_errno()));
        }
        "OK".to_string()
    })();
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), libc::__WALL);
    }
    result
}

/// ABI and DEVEL: the checks whose answers depend on `--allow`.
fn abi() {
    i386_checks();
    report("ABI.x32_getpid", &outcome(sys(X32_BIT + 39, [0; 6])));
    // modify_ldt(0 = read, buf, size): opened by multiarch (Wine, 16-bit code).
    let mut ldt = [0u8; 16];
    report(
        "ABI.modify_ldt_read",
        &outcome(sys(
            libc::SYS_modify_ldt,
            [0, ldt.as_mut_ptr() as u64, ldt.len() as u64, 0, 0, 0],
        )),
    );
    report("DEVEL.ptrace_child", &ptrace_child());
    // Pid 1 stays out of reach even with devel: it is not dumpable.
    report(
        "DEVEL.ptrace_init",
        &outcome(sys(
            libc::SYS_ptrace,
            [libc::PTRACE_ATTACH as u64, 1, 0, 0, 0, 0],
        )),
    );
    // A software clock counting our own user-space time, as `perf stat`
    // does unprivileged: exclude_kernel (bit 5) and exclude_hv (bit 6) of
    // the flags word at offset 40, so kernel.perf_event_paranoid=2 allows it.
    let mut pattr = [0u8; 64];
    pattr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    pattr[4..8].copy_from_slice(&64u32.to_ne_bytes());
    pattr[40..48].copy_from_slice(&((1u64 << 5) | (1u64 << 6)).to_ne_bytes());
    let fd = sys(
        libc::SYS_perf_event_open,
        [pattr.as_ptr() as u64, 0, u64::MAX, u64::MAX, 0, 0],
    );
    report("DEVEL.perf_event_open", &outcome(fd));
    if fd >= 0 {
        // SAFETY: closing the descriptor perf_event_open just gave us.
        unsafe { libc::close(fd as i32) };
    }
    let features = std::fs::read_to_string("/.flatpak-info")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("features=").map(str::to_owned))
        .unwrap_or_default();
    report_with(
        "ABI.info_features",
        "OK",
        serde_json::json!({ "features": features }),
    );
}

/// HOME: the home the app sees and whether its data dir under it is the
/// writable one (writes a file the host side looks for).
fn home() {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let data = env("XDG_DATA_HOME");
    let r = match std::fs::write(format!("{data}/porthole-home-check"), "written inside\n") {
        Ok(()) => "OK".to_string(),
        Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
    };
    report_with(
        "HOME.write_data",
        &r,
        serde_json::json!({ "HOME": env("HOME"), "XDG_DATA_HOME": data }),
    );
}

/// FD: which descriptors this process holds (from /proc/self/fd, minus the
/// one used to list it), and whether fds 3 to 9 resolve.
fn fds() {
    let listed: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // The listing's own descriptor is the highest one and is gone now.
    let mut nums: Vec<i64> = listed.iter().filter_map(|n| n.parse().ok()).collect();
    nums.sort_unstable();
    nums.pop();
    report_with("FD.self_list", "OK", serde_json::json!({ "fds": nums }));
    for fd in 3..=9 {
        let r = match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
            Ok(t) => format!("OK {}", t.display()),
            Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
        };
        report(&format!("FD.self_{fd}"), &r);
    }
}

/// P26/P27: what pid 1 (a clone of the host launcher) exposes to the app:
/// descriptors inherited from the host, its environment, its memory.
fn pid1() {
    for fd in 3..=9 {
        let r = match std::fs::read_link(format!("/proc/1/fd/{fd}")) {
            Ok(t) => format!("OK {}", t.display()),
            Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
        };
        report(&format!("P26.init_fd_{fd}"), &r);
    }
    let r = match std::fs::read_dir("/proc/1/fd") {
        Ok(rd) => format!("OK {}", rd.flatten().count()),
        Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
    };
    report("P26.init_fd_list", &r);
    match std::fs::read("/proc/1/environ") {
        Ok(b) => report_with(
            "P27.init_environ",
            "OK",
            serde_json::json!({ "environ": String::from_utf8_lossy(&b).replace('\0', "\n") }),
        ),
        Err(e) => report(
            "P27.init_environ",
            &errno_name(e.raw_os_error().unwrap_or(0)),
        ),
    }
    // P28: pid 1's process group, session and controlling tty (stat fields
    // 5 to 7): its own (1, 1, none), not the caller's (0 from in here).
    let stat = std::fs::read_to_string("/proc/1/stat").unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    report_with(
        "P28.init_session",
        "OK",
        serde_json::json!({
            "pgrp": f.get(2).copied().unwrap_or(""),
            "session": f.get(3).copied().unwrap_or(""),
            "tty_nr": f.get(4).copied().unwrap_or(""),
        }),
    );
    let r = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/1/mem")
    {
        Ok(_) => "OK".to_string(),
        Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
    };
    report("P27.init_mem_rw", &r);
}

fn battery() {
    // First, before this process opens anything itself.
    fds();
    pid1();
    // P01: TIOCSTI on stdin (a pty from the harness), and proofs that the
    // answer is the filter's: on a bad fd the kernel would say EBADF.
    let ch = b'x';
    // SAFETY: TIOCSTI reads one byte from the pointer, which is live.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSTI, &ch) } as i64;
    report("P01.tiocsti", &outcome(rc));
    report(
        "P01.tiocsti_badfd",
        &outcome(sys(
            libc::SYS_ioctl,
            [u64::MAX, libc::TIOCSTI, &ch as *const u8 as u64, 0, 0, 0],
        )),
    );
    report(
        "P01.tiocsti_high_bits",
        &outcome(sys(
            libc::SYS_ioctl,
            [
                u64::MAX,
                libc::TIOCSTI | (1 << 32),
                &ch as *const u8 as u64,
                0,
                0,
                0,
            ],
        )),
    );
    report(
        "P01.tioclinux_badfd",
        &outcome(sys(
            libc::SYS_ioctl,
            [u64::MAX, libc::TIOCLINUX, &ch as *const u8 as u64, 0, 0, 0],
        )),
    );
    // An ordinary ioctl reaches the kernel (EBADF): ioctl is not blanket-denied.
    report(
        "P01.fionread_badfd",
        &outcome(sys(libc::SYS_ioctl, [u64::MAX, libc::FIONREAD, 0, 0, 0, 0])),
    );

    // P02: namespaces.
    report(
        "P02.unshare_user",
        &outcome(sys(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        )),
    );
    report(
        "P02.unshare_mount",
        &outcome(sys(
            libc::SYS_unshare,
            [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0],
        )),
    );
    {
        // clone(2) with CLONE_NEWUSER: the argument filter. If it were to
        // succeed, the child exits at once.
        let rc = sys(
            libc::SYS_clone,
            [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
        );
        if rc == 0 {
            // SAFETY: in the child of a fork-like clone: leave immediately.
            unsafe { libc::_exit(0) };
        }
        report("P02.clone_newuser", &outcome(rc));
        if rc > 0 {
            // SAFETY: reaping the child we just created.
            unsafe { libc::waitpid(rc as i32, std::ptr::null_mut(), 0) };
        }
        report(
            "P02.setns",
            &outcome(sys(libc::SYS_setns, [u64::MAX, 0, 0, 0, 0, 0])),
        );
    }

    // P03: mount and umount.
    let _ = std::fs::create_dir_all("/tmp/m");
    let (none, m, tmpfs) = (c("none"), c("/tmp/m"), c("tmpfs"));
    // SAFETY: valid NUL-terminated strings, null data.
    let rc = unsafe {
        libc::mount(
            none.as_ptr(),
            m.as_ptr(),
            tmpfs.as_ptr(),
            0,
            std::ptr::null(),
        )
    } as i64;
    report("P03.mount_tmpfs", &outcome(rc));
    let usr = c("/usr");
    // SAFETY: valid NUL-terminated string.
    let rc = unsafe { libc::umount2(usr.as_ptr(), libc::MNT_DETACH) } as i64;
    report("P03.umount_usr", &outcome(rc));
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().nth(4) == Some("/usr"))
        })
        .unwrap_or(false);
    report(
        "P03.usr_still_mounted",
        if mounted { "OK" } else { "MISSING" },
    );

    // P04: the new mount API, io_uring: ENOSYS so callers fall back.
    report(
        "P04.fsopen",
        &outcome(sys(
            libc::SYS_fsopen,
            [tmpfs.as_ptr() as u64, 0, 0, 0, 0, 0],
        )),
    );
    report(
        "P04.open_tree",
        &outcome(sys(
            libc::SYS_open_tree,
            [libc::AT_FDCWD as u64, usr.as_ptr() as u64, 1, 0, 0, 0],
        )),
    );
    report(
        "P04.move_mount",
        &outcome(sys(libc::SYS_move_mount, [u64::MAX, 0, u64::MAX, 0, 0, 0])),
    );
    report(
        "P04.mount_setattr",
        &outcome(sys(libc::SYS_mount_setattr, [u64::MAX, 0, 0, 0, 0, 0])),
    );
    report(
        "P04.fsmount",
        &outcome(sys(libc::SYS_fsmount, [u64::MAX, 0, 0, 0, 0, 0])),
    );
    report(
        "P04.io_uring_setup",
        &outcome(sys(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0, 0])),
    );

    // P05: clone3 with CLONE_NEWUSER.
    {
        use porthole_launcher::namespace::CloneArgs;
        let args = CloneArgs {
            flags: libc::CLONE_NEWUSER as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        let rc = sys(
            libc::SYS_clone3,
            [
                &args as *const CloneArgs as u64,
                std::mem::size_of::<CloneArgs>() as u64,
                0,
                0,
                0,
                0,
            ],
        );
        if rc == 0 {
            // SAFETY: in the child: leave immediately.
            unsafe { libc::_exit(0) };
        }
        report_with(
            "P05.clone3_newuser",
            &outcome(rc),
            serde_json::json!({ "child_created": rc > 0 }),
        );
    }

    // P06: read-only file systems.
    let x = c("/usr/bin/.x");
    // SAFETY: valid path, flags and mode.
    let fd = unsafe { libc::open(x.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) } as i64;
    report("P06.create_in_usr", &outcome(fd));
    let appx = c("/app/x");
    // SAFETY: valid path.
    report(
        "P06.mkdir_in_app",
        &outcome(unsafe { libc::mkdir(appx.as_ptr(), 0o755) } as i64),
    );

    // P07: host home secrets.
    let home = std::env::var("HOME").unwrap_or_default();
    report(
        "P07.stat_ssh",
        &outcome(
            std::fs::metadata(format!("{home}/.ssh"))
                .map(|_| 0)
                .unwrap_or(-1),
        ),
    );

    // P08: processes visible.
    let mut procs = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                procs.push(serde_json::json!({ "pid": pid, "comm": comm.trim_end() }));
            }
        }
    }
    report_with("P08.proc_list", "OK", serde_json::json!({ "procs": procs }));

    // P10: ptrace pid 1 and a sibling (our own child, which the kernel would
    // allow: only the filter says no).
    report(
        "P10.ptrace_init",
        &outcome(sys(
            libc::SYS_ptrace,
            [libc::PTRACE_ATTACH as u64, 1, 0, 0, 0, 0],
        )),
    );
    // SAFETY: single-threaded; the child only pauses until killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    report(
        "P10.ptrace_sibling",
        &outcome(sys(
            libc::SYS_ptrace,
            [libc::PTRACE_ATTACH as u64, child as u64, 0, 0, 0, 0],
        )),
    );
    report(
        "P10.process_vm_readv",
        &outcome(sys(
            libc::SYS_process_vm_readv,
            [child as u64, 0, 0, 0, 0, 0],
        )),
    );
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }

    // P11: devices.
    for dev in [
        "/dev/sda",
        "/dev/nvme0n1",
        "/dev/mem",
        "/dev/kmsg",
        "/dev/vda",
    ] {
        let p = c(dev);
        // SAFETY: valid path and flags.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) } as i64;
        report(&format!("P11.open{}", dev.replace('/', "_")), &outcome(fd));
    }

    // P12: keyrings. KEYCTL_GET_KEYRING_ID = 0, KEY_SPEC_USER_KEYRING = -4,
    // KEY_SPEC_PROCESS_KEYRING = -2.
    report(
        "P12.keyctl",
        &outcome(sys(libc::SYS_keyctl, [0, (-4i64) as u64, 0, 0, 0, 0])),
    );
    let (user, k, v) = (c("user"), c("k"), c("v"));
    report(
        "P12.add_key",
        &outcome(sys(
            libc::SYS_add_key,
            [
                user.as_ptr() as u64,
                k.as_ptr() as u64,
                v.as_ptr() as u64,
                1,
                (-2i64) as u64,
                0,
            ],
        )),
    );

    // P29: NUMA policy, file handles, personalities (review finding 9).
    report(
        "P29.mbind",
        &outcome(sys(libc::SYS_mbind, [0, 4096, 0, 0, 0, 0])),
    );
    report(
        "P29.set_mempolicy",
        &outcome(sys(libc::SYS_set_mempolicy, [0, 0, 0, 0, 0, 0])),
    );
    let mut mode: libc::c_int = 0;
    report(
        "P29.get_mempolicy",
        &outcome(sys(
            libc::SYS_get_mempolicy,
            [&mut mode as *mut libc::c_int as u64, 0, 0, 0, 0, 0],
        )),
    );
    let mut handle = [0u8; 136];
    handle[..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    let root = c("/");
    report(
        "P29.name_to_handle_at",
        &outcome(sys(
            libc::SYS_name_to_handle_at,
            [
                libc::AT_FDCWD as u64,
                root.as_ptr() as u64,
                handle.as_mut_ptr() as u64,
                &mut mount_id as *mut libc::c_int as u64,
                0,
                0,
            ],
        )),
    );
    // ADDR_NO_RANDOMIZE (0x0040000) would switch ASLR off for the next exec;
    // READ_IMPLIES_EXEC (0x0400000) makes every readable mapping executable;
    // 0x100000000 is PER_LINUX with a high bit the kernel would ignore.
    for (name, persona) in [
        ("addr_no_randomize", 0x0040000u64),
        ("read_implies_exec", 0x0400000),
        ("per_bsd", 0x0006),
        ("high_bits", 0x1_0000_0000),
        ("all_but_bit_0", 0xffff_fffe),
    ] {
        report(
            &format!("P29.personality_{name}"),
            &outcome(sys(libc::SYS_personality, [persona, 0, 0, 0, 0, 0])),
        );
    }
    report(
        "P29.personality_query",
        &outcome(sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0])),
    );
    report(
        "P29.personality_linux",
        &outcome(sys(libc::SYS_personality, [0, 0, 0, 0, 0, 0])),
    );

    // P13: perf and bpf.
    {
        // struct perf_event_attr, PERF_ATTR_SIZE_VER0 (64 bytes): type =
        // PERF_TYPE_SOFTWARE (1), size, config = PERF_COUNT_SW_CPU_CLOCK (0).
        let mut pattr = [0u8; 64];
        pattr[0..4].copy_from_slice(&1u32.to_ne_bytes());
        pattr[4..8].copy_from_slice(&64u32.to_ne_bytes());
        report(
            "P13.perf_event_open",
            &outcome(sys(
                libc::SYS_perf_event_open,
                [pattr.as_ptr() as u64, 0, u64::MAX, u64::MAX, 0, 0],
            )),
        );
        // BPF_PROG_LOAD (5) of a socket filter: "r0 = 0; exit".
        let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
        let license = c("GPL");
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // BPF_PROG_TYPE_SOCKET_FILTER
        attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        report(
            "P13.bpf_prog_load",
            &outcome(sys(
                libc::SYS_bpf,
                [5, attr.as_ptr() as u64, attr.len() as u64, 0, 0, 0],
            )),
        );
    }

    // P14: socket families.
    for (name, fam, ty, proto) in [
        ("packet", libc::AF_PACKET, libc::SOCK_RAW, 0),
        ("vsock", libc::AF_VSOCK, libc::SOCK_STREAM, 0),
        ("key", libc::AF_KEY, libc::SOCK_RAW, 2),
        ("bluetooth", libc::AF_BLUETOOTH, libc::SOCK_STREAM, 0),
        ("future_family_200", 200, libc::SOCK_STREAM, 0),
    ] {
        // SAFETY: socket(2) takes integers only.
        let fd = unsafe { libc::socket(fam, ty, proto) } as i64;
        report(&format!("P14.socket_{name}"), &outcome(fd));
    }
    // SAFETY: socket(2) takes integers only.
    let unix_fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) } as i64;
    report("P14.socket_unix_allowed", &outcome(unix_fd));

    // Other ABIs: i386 (int 0x80) is closed unless --allow=multiarch, x32
    // always; `porthole-probe abi` checks what the features open.
    i386_checks();
    report(
        "ABI.x32_unshare",
        &outcome(sys(
            X32_BIT + 272,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        )),
    );
    report(
        "ABI.x32_keyctl",
        &outcome(sys(X32_BIT + 250, [0, (-4i64) as u64, 0, 0, 0, 0])),
    );
    // The x32 ABI is denied as a whole, even for harmless calls (getpid = 39).
    report("ABI.x32_getpid", &outcome(sys(X32_BIT + 39, [0; 6])));
    report("ABI.unknown_syscall", &outcome(sys(1000, [0; 6])));

    // P17: privileges.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut fields = serde_json::Map::new();
    for line in status.lines() {
        if let Some((k, v)) = line.split_once(':')
            && (k.starts_with("Cap") || k == "NoNewPrivs" || k == "Seccomp")
        {
            fields.insert(k.to_owned(), serde_json::Value::String(v.trim().to_owned()));
        }
    }
    report_with("P17.status", "OK", serde_json::Value::Object(fields));

    // P18, one layer at a time: every place a setuid file could come from
    // is mounted nosuid (the 1:1 id map and no_new_privs are the others).
    for (name, path) in [
        ("app", "/app/bin"),
        ("usr", "/usr/bin"),
        ("tmp", "/tmp"),
        ("dev_shm", "/dev/shm"),
    ] {
        let r = match nix::sys::statvfs::statvfs(path) {
            Ok(v) if v.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID) => "NOSUID",
            Ok(_) => "SUID_ALLOWED",
            Err(_) => "ERROR",
        };
        report(&format!("P18.nosuid_{name}"), r);
    }

    // P23: the identity file.
    let info = c("/.flatpak-info");
    // SAFETY: valid path and flags.
    report(
        "P23.open_write",
        &outcome(unsafe { libc::open(info.as_ptr(), libc::O_WRONLY) } as i64),
    );
    let other = c("/.flatpak-info.x");
    // SAFETY: valid paths.
    report(
        "P23.rename",
        &outcome(unsafe { libc::rename(info.as_ptr(), other.as_ptr()) } as i64),
    );
    // SAFETY: valid path.
    report(
        "P23.unlink",
        &outcome(unsafe { libc::unlink(info.as_ptr()) } as i64),
    );
    let _ = std::fs::write("/tmp/fake-info", "[Application]\nname=org.evil.App\n");
    let fake = c("/tmp/fake-info");
    // SAFETY: valid paths, null fstype and data.
    let rc = unsafe {
        libc::mount(
            fake.as_ptr(),
            info.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    } as i64;
    report("P23.bind_over", &outcome(rc));
    let name = std::fs::read_to_string("/.flatpak-info")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("name=").map(str::to_owned))
        })
        .unwrap_or_default();
    report_with("P23.info_name", "OK", serde_json::json!({ "name": name }));

    // P24: the environment.
    let env: serde_json::Map<String, serde_json::Value> = std::env::vars()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    report_with("P24.env", "OK", serde_json::json!({ "env": env }));

    // P25: cgroups.
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    report_with(
        "P25.proc_self_cgroup",
        "OK",
        serde_json::json!({ "cgroup": cg }),
    );
    let me = std::process::id().to_string();
    for path in [
        "/sys/fs/cgroup/cgroup.procs",
        "/sys/fs/cgroup/pids/cgroup.procs",
        "/sys/fs/cgroup/unified/cgroup.procs",
    ] {
        let r = std::fs::write(path, &me);
        let res = match r {
            Ok(()) => "OK".to_string(),
            Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
        };
        report(&format!("P25.write{}", path.replace('/', "_")), &res);
    }
    // The writes above fail with ENOENT because there is no /sys at all;
    // reported on its own so that a /sys appearing one day is noticed.
    let sys = match std::fs::symlink_metadata("/sys") {
        Ok(_) => "OK".to_string(),
        Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
    };
    report("P25.sys_absent", &sys);

    // No bus of any kind when the host has none (the tests' environment);
    // with one, only the proxy's socket (tests/dbus.rs).
    let uid = std::env::var("XDG_RUNTIME_DIR").unwrap_or_default();
    for path in [
        format!("{uid}/bus"),
        "/run/dbus/system_bus_socket".into(),
        "/var/run/dbus/system_bus_socket".into(),
    ] {
        report(
            &format!("BUS.stat:{path}"),
            &outcome(std::fs::symlink_metadata(&path).map(|_| 0).unwrap_or(-1)),
        );
    }
    report(
        "BUS.env",
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
            || std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_some()
        {
            "PRESENT"
        } else {
            "ABSENT"
        },
    );
    let _ = std::io::stdout().flush();
}

/// connect(2) to the abstract unix socket `@name`.
fn connect_abstract(name: &str) -> String {
    use std::os::linux::net::SocketAddrExt;
    let addr = match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
        Ok(a) => a,
        Err(e) => return errno_name(e.raw_os_error().unwrap_or(0)),
    };
    match std::os::unix::net::UnixStream::connect_addr(&addr) {
        Ok(_) => "OK".into(),
        Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
    }
}

fn connect_unix(path: &str) -> String {
    // SAFETY: socket(2) takes integers only.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return errno_name(last_errno());
    }
    // SAFETY: sockaddr_un is plain old data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: addr is a valid sockaddr_un of the given size.
    let rc = unsafe {
        libc::connect(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as u32,
        )
    };
    let r = outcome(rc as i64);
    // SAFETY: closing our socket.
    unsafe { libc::close(fd) };
    r
}

fn connect_tcp(addr: &str) -> String {
    match std::net::TcpStream::connect_timeout(
        &addr.parse().expect("IP:PORT"),
        std::time::Duration::from_secs(2),
    ) {
        Ok(_) => "OK".into(),
        Err(e) => e
            .raw_os_error()
            .map(errno_name)
            .unwrap_or_else(|| format!("{:?}", e.kind())),
    }
}

fn demo() {
    let home = std::env::var("HOME").unwrap_or_default();
    let line = |what: &str, ok: bool, detail: String| {
        println!(
            "  {:<34} {:<8} {detail}",
            what,
            if ok { "yes" } else { "no" }
        )
    };
    println!("What this app can see (porthole-probe demo):");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    line(
        "host home directory contents",
        std::fs::read_dir(&home)
            .map(|d| d.count() > 1)
            .unwrap_or(false),
        format!("$HOME={home}"),
    );
    let n = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0);
    line(
        "other processes",
        n > 3,
        format!("{n} processes visible in /proc"),
    );
    // Judge the network by the interfaces this namespace has, without sending
    // a packet anywhere: a sandbox without the grant has only `lo`.
    let ifaces: Vec<String> = std::fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
        .collect();
    let net = ifaces.iter().any(|i| i != "lo");
    line(
        "network (interfaces besides lo)",
        net,
        format!("interfaces: {}", ifaces.join(" ")),
    );
    let devs = std::fs::read_dir("/dev")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    line(
        "block devices (/dev/sda, /dev/vda)",
        std::path::Path::new("/dev/sda").exists() || std::path::Path::new("/dev/vda").exists(),
        format!("/dev: {devs}"),
    );
    let rt = std::env::var("XDG_RUNTIME_DIR").unwrap_or_default();
    line(
        "session bus",
        std::path::Path::new(&format!("{rt}/bus")).exists(),
        String::new(),
    );
    line(
        "Wayland socket",
        std::env::var_os("WAYLAND_DISPLAY").is_some(),
        std::env::var("WAYLAND_DISPLAY").unwrap_or_default(),
    );
    line(
        "PulseAudio socket",
        std::env::var_os("PULSE_SERVER").is_some(),
        std::env::var("PULSE_SERVER").unwrap_or_default(),
    );
    line("/sys", std::path::Path::new("/sys").exists(), String::new());
    println!("  hostname {}", hostname.trim());
    let info = std::fs::read_to_string("/.flatpak-info").unwrap_or_default();
    println!(
        "Granted (/.flatpak-info):\n{}",
        info.lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        "battery" => battery(),
        "fds" => fds(),
        "abi" => abi(),
        "home" => home(),
        "connect-unix" => report("P15.connect_unix", &connect_unix(arg(2))),
        "connect-abstract" => report("P30.connect_abstract", &connect_abstract(arg(2))),
        "connect-tcp" => report(&format!("P16.{}", arg(2)), &connect_tcp(arg(3))),
        "kill-all" => {
            // SAFETY: kill(-1, SIGKILL) signals every process we may signal,
            // including ourselves last; that is the attack.
            let rc = unsafe { libc::kill(-1, libc::SIGKILL) };
            report("P09.kill_all", &outcome(rc as i64));
        }
        "scan" => {
            let max: i64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(4_194_304);
            let mut alive = Vec::new();
            for pid in 1..=max {
                // SAFETY: kill with signal 0 only checks for existence.
                let rc = unsafe { libc::kill(pid as i32, 0) };
                if rc == 0 || last_errno() == libc::EPERM {
                    alive.push(pid);
                }
            }
            report_with(
                "P09.scan",
                "OK",
                serde_json::json!({ "alive": alive, "pid_max": max }),
            );
        }
        "exec" => {
            let out = std::process::Command::new(arg(2)).args(&args[3..]).output();
            match out {
                Ok(o) => report_with(
                    "P18.exec",
                    "OK",
                    serde_json::json!({ "stdout": String::from_utf8_lossy(&o.stdout), "status": o.status.code() }),
                ),
                Err(e) => report("P18.exec", &errno_name(e.raw_os_error().unwrap_or(0))),
            }
        }
        // SAFETY: geteuid has no preconditions.
        "euid" => println!("{}", unsafe { libc::geteuid() }),
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(arg(2).parse().unwrap_or(60))),
        "exit" => std::process::exit(arg(2).parse().unwrap_or(0)),
        "wait-term" => {
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(nix::sys::signal::Signal::SIGTERM);
            let _ = set.thread_block();
            println!("ready");
            let _ = std::io::stdout().flush();
            if set.wait() == Ok(nix::sys::signal::Signal::SIGTERM) {
                std::process::exit(42);
            }
        }
        "demo" => demo(),
        "net-connect" => net::connect(arg(2), arg(3), arg(4)),
        "net-bench" => net::bench(arg(2), arg(3), arg(4), arg(5), arg(6)),
        "dbus-battery" => dbus_battery(arg(2), &args[3.min(args.len())..]),
        "dbus-serve" => dbus_serve(&args[2.min(args.len())..]),
        "dbus-has-owner" => dbus_has_owner(arg(2)),
        "stat" => match std::fs::metadata(arg(2)) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                report_with(
                    "STAT",
                    "OK",
                    serde_json::json!({ "ino": m.ino(), "dev": m.dev() }),
                )
            }
            Err(e) => report("STAT", &errno_name(e.raw_os_error().unwrap_or(0))),
        },
        "spawn" => {
            // Start up to N sleeping children; report how many fork() allowed.
            let n: usize = arg(2).parse().unwrap_or(50);
            let mut kids = Vec::new();
            let mut err = "OK".to_string();
            for _ in 0..n {
                // SAFETY: single-threaded; the child only pauses.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    loop {
                        // SAFETY: pause has no arguments.
                        unsafe { libc::pause() };
                    }
                }
                if pid < 0 {
                    err = errno_name(last_errno());
                    break;
                }
                kids.push(pid);
            }
            report_with(
                "CG.spawn",
                &err,
                serde_json::json!({ "started": kids.len() }),
            );
            for k in kids {
                // SAFETY: killing and reaping our own children.
                unsafe {
                    libc::kill(k, libc::SIGKILL);
                    libc::waitpid(k, std::ptr::null_mut(), 0);
                }
            }
        }
        "alloc" => {
            // Touch MB mebibytes, printing progress every 16 MiB.
            let mb: usize = arg(2).parse().unwrap_or(256);
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            for i in 0..mb {
                blocks.push(vec![1u8; 1 << 20]);
                if i % 16 == 15 {
                    println!(
                        "{{\"id\":\"CG.alloc_progress\",\"result\":\"OK\",\"mib\":{}}}",
                        i + 1
                    );
                    let _ = std::io::stdout().flush();
                }
            }
            report_with("CG.alloc", "OK", serde_json::json!({ "mib": blocks.len() }));
        }
        _ => {
            eprintln!(
                "usage: porthole-probe battery|connect-unix PATH|connect-tcp ID IP:PORT|kill-all|scan|exec PATH ARGS|euid|sleep N|exit N|wait-term|demo"
            );
            std::process::exit(2);
        }
    }
}

fn session_address() -> String {
    std::env::var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_default()
}

fn dbus_outcome(r: Result<dbus::Message, String>) -> String {
    match r {
        Ok(m) => match m.first_u32() {
            Some(v) if m.has_body() => format!("OK:{v}"),
            _ => "OK".into(),
        },
        Err(e) => e,
    }
}

/// P19-P22 from inside the sandbox over the session bus we were given, then
/// a call to each `reach` name; then holds the connection (and any name it
/// got) until stdin closes, so the harness can look at the host bus.
fn dbus_battery(app_id: &str, reach: &[String]) {
    use dbus::Arg;
    let mut c = match dbus::Conn::open(&session_address()) {
        Ok(c) => c,
        Err(e) => {
            report("DBUS.connect", &e);
            return;
        }
    };
    report("DBUS.connect", "OK");
    let r = c.call(
        "org.freedesktop.secrets",
        "/org/freedesktop/secrets",
        "org.freedesktop.Secret.Service",
        "OpenSession",
        &[Arg::Str("plain")],
    );
    report("P19.secrets", &dbus_outcome(r));
    let r = c.call(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.Monitoring",
        "BecomeMonitor",
        &[Arg::StrArray(&[]), Arg::U32(0)],
    );
    report("P20.become_monitor", &dbus_outcome(r));
    let r = c.bus("AddMatch", &[Arg::Str("type='signal',eavesdrop=true")]);
    report("P21.eavesdrop", &dbus_outcome(r));
    let r = c.bus(
        "RequestName",
        &[Arg::Str("org.example.NotMine"), Arg::U32(0)],
    );
    report("P22.not_mine", &dbus_outcome(r));
    let extra = format!("{app_id}.Extra");
    let r = c.bus("RequestName", &[Arg::Str(&extra), Arg::U32(0)]);
    report("P22.own_subname", &dbus_outcome(r));
    for name in reach {
        let r = c.call(name, "/", "org.freedesktop.DBus.Peer", "Ping", &[]);
        report(&format!("REACH.{name}"), &dbus_outcome(r));
    }
    report("DBUS.hold", "OK");
    let _ = std::io::stdout().flush();
    dbus::wait_stdin_eof();
}

/// The harness's stand-in service on the host bus: owns `names`, answers
/// every call with an empty reply and prints one line per call received;
/// exits when stdin closes.
fn dbus_serve(names: &[String]) {
    use dbus::Arg;
    let mut c = match dbus::Conn::open(&session_address()) {
        Ok(c) => c,
        Err(e) => {
            report("SERVE.ready", &e);
            std::process::exit(1);
        }
    };
    for n in names {
        // 4: DBUS_NAME_FLAG_DO_NOT_QUEUE; 1: primary owner.
        match c.bus("RequestName", &[Arg::Str(n), Arg::U32(4)]) {
            Ok(m) if m.first_u32() == Some(1) => {}
            other => {
                report(&format!("SERVE.ready:{n}"), &dbus_outcome(other));
                std::process::exit(1);
            }
        }
    }
    report("SERVE.ready", "OK");
    let _ = std::io::stdout().flush();
    std::thread::spawn(|| {
        dbus::wait_stdin_eof();
        std::process::exit(0);
    });
    c.block();
    loop {
        match c.read() {
            Ok(m) if dbus::is_call(&m) => {
                report_with(
                    "SERVE.call",
                    "OK",
                    serde_json::json!({
                        "member": m.member,
                        "interface": m.interface,
                        "destination": m.destination,
                        "sender": m.sender,
                    }),
                );
                let _ = std::io::stdout().flush();
                if !dbus::is_no_reply(&m) {
                    let _ = c.reply_empty(&m);
                }
            }
            Ok(_) => {}
            Err(_) => std::process::exit(1),
        }
    }
}

/// On the host: does `name` have an owner on the bus?
fn dbus_has_owner(name: &str) {
    use dbus::Arg;
    let mut c = match dbus::Conn::open(&session_address()) {
        Ok(c) => c,
        Err(e) => {
            report("OWNER", &e);
            return;
        }
    };
    let r = c.bus("NameHasOwner", &[Arg::Str(name)]);
    let v = match r {
        Ok(m) => match m.first_u32() {
            Some(1) => "true".to_string(),
            Some(_) => "false".to_string(),
            None => "?".to_string(),
        },
        Err(e) => e,
    };
    report("OWNER", &v);
}
