//! The seccomp filter: the policy is data (`seccomp/policy.txt`, language in
//! [`policy`]), compiled with libseccomp for every x86 ABI and every
//! combination of [`Features`] at build time (see `build.rs`); at launch we
//! only hand the app's ready programs to `seccomp(2)`, which allocates
//! nothing and so is safe after `clone`.

pub mod policy;

use std::borrow::Cow;

pub use policy::{Action, ArgCmp, CmpOp, Features, Policy, PolicyError, Rule, Section};

/// The reviewed policy text.
pub const POLICY: &str = include_str!("seccomp/policy.txt");

/// The programs the build script compiled from [`POLICY`], in load order,
/// one set per feature combination (indexed by [`Features::index`]).
const BUILTIN: [&[(&str, &[u8])]; 4] = include!(concat!(env!("OUT_DIR"), "/seccomp_programs.rs"));

/// Errors while preparing or loading the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("seccomp(SECCOMP_SET_MODE_FILTER): {0}")]
    Load(#[source] std::io::Error),
}

/// One BPF program ready to load.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: Cow<'static, str>,
    pub bytes: Cow<'static, [u8]>,
}

/// The filters, in the order they are loaded.
#[derive(Debug, Clone)]
pub struct Filters {
    pub programs: Vec<Program>,
}

impl Filters {
    /// The programs compiled into the binary for `features`.
    pub fn builtin(features: Features) -> Self {
        Filters {
            programs: BUILTIN[features.index()]
                .iter()
                .map(|(name, bytes)| Program {
                    name: Cow::Borrowed(*name),
                    bytes: Cow::Borrowed(*bytes),
                })
                .collect(),
        }
    }

    /// Parses and compiles the policy now for `features` (tests;
    /// `--dry-run` checks).
    pub fn compile(features: Features) -> Result<Self, SeccompError> {
        let (programs, unknown) = policy::compile(&Policy::parse(POLICY)?, features)?;
        for name in &unknown {
            tracing::debug!(syscall = %name, "libseccomp does not know this syscall; left to the default");
        }
        Ok(Filters {
            programs: programs
                .into_iter()
                .map(|p| Program {
                    name: Cow::Owned(p.name),
                    bytes: Cow::Owned(p.bytes),
                })
                .collect(),
        })
    }

    /// Loads every program into the calling thread. Needs no_new_privs (or
    /// CAP_SYS_ADMIN). Allocates nothing, so it is safe after `fork`.
    pub fn load(&self) -> Result<(), SeccompError> {
        for p in &self.programs {
            load_program(&p.bytes)?;
        }
        Ok(())
    }
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)`.
fn load_program(bytes: &[u8]) -> Result<(), SeccompError> {
    let insn = std::mem::size_of::<libc::sock_filter>();
    let prog = libc::sock_fprog {
        len: (bytes.len() / insn) as u16,
        filter: bytes.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `bytes`, which holds `len` whole sock_filter
    // records exported by libseccomp and outlives the call; the kernel copies
    // the program and never writes through the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Load(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::policy::CmpOp;

    #[test]
    fn builtin_policy_parses_with_both_sections() {
        let p = Policy::parse(POLICY).unwrap();
        let names: Vec<_> = p.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["allow-list", "argument-filters"]);
        assert_eq!(p.sections[0].default, Action::Errno(libc::ENOSYS));
        assert_eq!(p.sections[1].default, Action::Allow);
        let tiocsti = p.sections[1]
            .rules
            .iter()
            .find(|r| r.syscalls == ["ioctl"] && r.args[0].value == 0x5412)
            .unwrap();
        assert_eq!(tiocsti.args[0].op, CmpOp::MaskedEq(0xffff_ffff));
        assert_eq!(tiocsti.action, Action::Errno(libc::EPERM));
    }

    #[test]
    fn parser_rejects_bad_lines() {
        assert!(Policy::parse("allow read\n").is_err());
        assert!(Policy::parse("[s]\nfrobnicate read\n").is_err());
        assert!(Policy::parse("[s]\nallow read write a0==1\n").is_err());
        assert!(Policy::parse("[s]\nallow read a9==1\n").is_err());
        assert!(Policy::parse("[s]\nallow re/ad\n").is_err());
        assert!(Policy::parse("[s]\nwhen:bluetooth allow read\n").is_err());
        assert!(Policy::parse("[s]\nwhen:devel\n").is_err());
        assert!(Policy::parse("[s]\nwhen:devel default allow\n").is_err());
        let p = Policy::parse("[s]\nunless:devel errno:EPERM ptrace\n").unwrap();
        let c = p.sections[0].rules[0].condition.unwrap();
        assert!(c.holds(Features::default()));
        assert!(!c.holds(Features {
            devel: true,
            multiarch: false
        }));
        let p = Policy::parse("[s]\ndefault allow\nerrno:EPERM ioctl a1&0xff==0x12 # c\n").unwrap();
        assert_eq!(
            p.sections[0].rules[0].args[0],
            ArgCmp {
                arg: 1,
                op: CmpOp::MaskedEq(0xff),
                value: 0x12
            }
        );
    }

    #[test]
    fn builtin_policy_compiles_for_x86_64_and_i386() {
        let (programs, unknown) = policy::compile(
            &Policy::parse(POLICY).unwrap(),
            Features {
                multiarch: true,
                devel: false,
            },
        )
        .unwrap();
        let f = Filters::compile(Features::default()).unwrap();
        assert_eq!(f.programs.len(), 2);
        assert_eq!(programs.len(), 2);
        // Without multiarch the i386 branch is gone: each program is shorter.
        for (without, with) in f.programs.iter().zip(&programs) {
            assert!(
                without.bytes.len() < with.bytes.len(),
                "{}: {} vs {} bytes",
                with.name,
                without.bytes.len(),
                with.bytes.len()
            );
        }
        for p in &f.programs {
            assert!(!p.bytes.is_empty());
            assert_eq!(p.bytes.len() % std::mem::size_of::<libc::sock_filter>(), 0);
            assert!(p.bytes.len() / 8 < u16::MAX as usize);
        }
        // Names the policy relies on for the escape battery must be known.
        for must in [
            "clone3",
            "fsopen",
            "io_uring_setup",
            "keyctl",
            "bpf",
            "ptrace",
            "unshare",
        ] {
            assert!(
                !unknown.iter().any(|u| u == must),
                "{must} unknown to libseccomp"
            );
        }
    }

    #[test]
    fn builtin_programs_match_the_policy_file() {
        // What build.rs compiled into the binary is what the policy gives now,
        // for every feature combination.
        for features in Features::ALL {
            let fresh = Filters::compile(features).unwrap();
            let built = Filters::builtin(features);
            assert_eq!(built.programs.len(), fresh.programs.len());
            for (b, f) in built.programs.iter().zip(&fresh.programs) {
                assert_eq!(b.name, f.name);
                assert_eq!(b.bytes, f.bytes, "stale build of {} {features:?}", b.name);
            }
        }
    }

    #[test]
    fn filters_load_and_deny_in_a_child() {
        // Kernel-touching: in a forked child, so the test process stays free.
        // Built before fork: the child of a multi-threaded test process must
        // not allocate.
        let filters = Filters::builtin(Features::default());
        // SAFETY: the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = crate::capability::no_new_privs().is_ok()
                && filters.load().is_ok()
                // SAFETY: unshare takes integer flags.
                && unsafe { libc::unshare(libc::CLONE_NEWUSER) } == -1
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
                // SAFETY: a raw clone3 with a null argument; the filter answers first.
                && unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) } == -1
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS);
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
    }
}
