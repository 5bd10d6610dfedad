//! The seccomp policy language and its compilation with libseccomp.
//!
//! Shared by the build script (which compiles `policy.txt` into the binary,
//! so a launch does not spend milliseconds in libseccomp) and by the tests
//! (which compile it again at run time and compare). Depends only on libc,
//! libseccomp and thiserror for that reason.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

/// Errors while parsing or compiling the policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("seccomp policy line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error("libseccomp: {op}: {source}")]
    Compile {
        op: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp: {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Errno(i32),
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        if s == "allow" {
            return Some(Action::Allow);
        }
        let name = s.strip_prefix("errno:")?;
        let errno = match name {
            "EPERM" => libc::EPERM,
            "ENOSYS" => libc::ENOSYS,
            "EAFNOSUPPORT" => libc::EAFNOSUPPORT,
            "EACCES" => libc::EACCES,
            _ => return None,
        };
        Some(Action::Errno(errno))
    }

    fn to_scmp(self) -> ScmpAction {
        match self {
            Action::Allow => ScmpAction::Allow,
            Action::Errno(e) => ScmpAction::Errno(e),
        }
    }
}

/// One comparison on a syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgCmp {
    pub arg: u32,
    pub op: CmpOp,
    pub value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
    MaskedEq(u64),
}

/// The optional features of Flatpak's `--allow` vocabulary that change the
/// filter (`features=` in `[Context]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Features {
    /// `multiarch`: the i386 ABI (`int 0x80`) gets the policy; without it
    /// every i386 syscall gets the bad-arch action, like x32 always.
    pub multiarch: bool,
    /// `devel`: ptrace and perf_event_open within the sandbox.
    pub devel: bool,
}

impl Features {
    /// Every combination, in the order of [`Features::index`].
    pub const ALL: [Features; 4] = [
        Features {
            multiarch: false,
            devel: false,
        },
        Features {
            multiarch: true,
            devel: false,
        },
        Features {
            multiarch: false,
            devel: true,
        },
        Features {
            multiarch: true,
            devel: true,
        },
    ];

    /// Position in [`Features::ALL`] (and in the build script's table).
    pub fn index(self) -> usize {
        usize::from(self.multiarch) | usize::from(self.devel) << 1
    }

    fn has(self, flag: Flag) -> bool {
        match flag {
            Flag::Multiarch => self.multiarch,
            Flag::Devel => self.devel,
        }
    }
}

/// A feature a rule can depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Multiarch,
    Devel,
}

/// `when:FLAG` (the rule applies only with the feature) or `unless:FLAG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    pub flag: Flag,
    pub present: bool,
}

impl Condition {
    fn parse(word: &str) -> Option<Option<Self>> {
        let (present, name) = if let Some(n) = word.strip_prefix("when:") {
            (true, n)
        } else if let Some(n) = word.strip_prefix("unless:") {
            (false, n)
        } else {
            return Some(None);
        };
        let flag = match name {
            "multiarch" => Flag::Multiarch,
            "devel" => Flag::Devel,
            _ => return None,
        };
        Some(Some(Condition { flag, present }))
    }

    /// Whether a rule with this condition is part of the filter for `f`.
    pub fn holds(self, f: Features) -> bool {
        f.has(self.flag) == self.present
    }
}

/// One line of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub line: usize,
    /// `when:FLAG` / `unless:FLAG` before the action; none: always.
    pub condition: Option<Condition>,
    pub action: Action,
    pub syscalls: Vec<String>,
    pub args: Vec<ArgCmp>,
}

/// One section of the policy: a default action and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub default: Action,
    pub rules: Vec<Rule>,
}

/// The parsed policy, one section per filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub sections: Vec<Section>,
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_cmp(tok: &str) -> Option<ArgCmp> {
    let rest = tok.strip_prefix('a')?;
    let digit = rest.chars().next()?.to_digit(10)?;
    if digit > 5 {
        return None;
    }
    let rest = &rest[1..];
    if let Some(masked) = rest.strip_prefix('&') {
        let (mask, value) = masked.split_once("==")?;
        return Some(ArgCmp {
            arg: digit,
            op: CmpOp::MaskedEq(parse_num(mask)?),
            value: parse_num(value)?,
        });
    }
    for (sym, op) in [
        ("==", CmpOp::Eq),
        ("!=", CmpOp::Ne),
        (">=", CmpOp::Ge),
        ("<=", CmpOp::Le),
        (">", CmpOp::Gt),
        ("<", CmpOp::Lt),
    ] {
        if let Some(v) = rest.strip_prefix(sym) {
            return Some(ArgCmp {
                arg: digit,
                op,
                value: parse_num(v)?,
            });
        }
    }
    None
}

impl Policy {
    /// Parses the policy text (see the header of `policy.txt`).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut sections: Vec<Section> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |reason: &str| PolicyError::Parse {
                line,
                reason: reason.to_owned(),
            };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            if let Some(name) = content.strip_prefix('[') {
                let name = name.strip_suffix(']').ok_or_else(|| err("unclosed ["))?;
                sections.push(Section {
                    name: name.to_owned(),
                    default: Action::Errno(libc::EPERM),
                    rules: Vec::new(),
                });
                continue;
            }
            let section = sections
                .last_mut()
                .ok_or_else(|| err("rule before any [section]"))?;
            let mut words = content.split_whitespace();
            let mut first = words.next().ok_or_else(|| err("empty rule"))?;
            let condition = Condition::parse(first).ok_or_else(|| err("unknown feature"))?;
            if condition.is_some() {
                first = words
                    .next()
                    .ok_or_else(|| err("condition without a rule"))?;
            }
            if first == "default" {
                if condition.is_some() {
                    return Err(err("a default cannot be conditional"));
                }
                let action = words.next().ok_or_else(|| err("default needs an action"))?;
                section.default =
                    Action::parse(action).ok_or_else(|| err("unknown default action"))?;
                continue;
            }
            let action = Action::parse(first).ok_or_else(|| err("unknown action"))?;
            let mut syscalls = Vec::new();
            let mut args = Vec::new();
            for w in words {
                if w.starts_with('a') && w[1..].starts_with(|c: char| c.is_ascii_digit()) {
                    args.push(parse_cmp(w).ok_or_else(|| err("bad argument comparison"))?);
                } else if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    syscalls.push(w.to_owned());
                } else {
                    return Err(err("bad syscall name"));
                }
            }
            if syscalls.is_empty() {
                return Err(err("rule names no syscall"));
            }
            if !args.is_empty() && syscalls.len() != 1 {
                return Err(err("argument comparisons need exactly one syscall"));
            }
            section.rules.push(Rule {
                line,
                condition,
                action,
                syscalls,
                args,
            });
        }
        if sections.is_empty() {
            return Err(PolicyError::Parse {
                line: 0,
                reason: "no sections".into(),
            });
        }
        Ok(Policy { sections })
    }
}

/// A compiled BPF program (an array of `struct sock_filter`).
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Compiles every section for `features`, in order; also returns the
/// syscall names the installed libseccomp does not know (left to the
/// section's default).
pub fn compile(
    policy: &Policy,
    features: Features,
) -> Result<(Vec<Program>, Vec<String>), PolicyError> {
    let mut unknown = Vec::new();
    let programs = policy
        .sections
        .iter()
        .map(|s| compile_section(s, features, &mut unknown))
        .collect::<Result<Vec<_>, _>>()?;
    unknown.sort();
    unknown.dedup();
    Ok((programs, unknown))
}

fn compile_err(
    op: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> PolicyError {
    let op = op.into();
    move |source| PolicyError::Compile { op, source }
}

fn to_scmp_cmp(c: &ArgCmp) -> ScmpArgCompare {
    let op = match c.op {
        CmpOp::Eq => ScmpCompareOp::Equal,
        CmpOp::Ne => ScmpCompareOp::NotEqual,
        CmpOp::Ge => ScmpCompareOp::GreaterEqual,
        CmpOp::Gt => ScmpCompareOp::Greater,
        CmpOp::Le => ScmpCompareOp::LessOrEqual,
        CmpOp::Lt => ScmpCompareOp::Less,
        CmpOp::MaskedEq(m) => ScmpCompareOp::MaskedEqual(m),
    };
    ScmpArgCompare::new(c.arg, op, c.value)
}

fn compile_section(
    section: &Section,
    features: Features,
    unknown: &mut Vec<String>,
) -> Result<Program, PolicyError> {
    let mut ctx =
        ScmpFilterContext::new(section.default.to_scmp()).map_err(compile_err("seccomp_init"))?;
    // Every ABI an x86-64 CPU can enter is covered. x86_64 gets the policy.
    // i386 (int 0x80) gets it only with `multiarch`, as in Flatpak, which
    // adds SCMP_ARCH_X86 only for a multiarch app; without it i386 is left
    // out of the filter and libseccomp routes every i386 syscall to the
    // bad-arch action, EPERM. x32 (x86_64's arch token with bit 30 set in
    // the syscall number) is always left out, so the whole x32 ABI is a
    // policy denial too (it is practically unused, and Debian kernels
    // disable it by default). Each ABI left out also keeps the program
    // shorter, which matters because the kernel JIT-compiles it on every
    // launch. Flatpak leaves the bad-arch action at libseccomp's default,
    // killing the thread; EPERM fails the call instead, the same for both
    // closed ABIs, and never leaves a multi-threaded app with one thread gone.
    let arches: &[ScmpArch] = if features.multiarch {
        &[ScmpArch::X8664, ScmpArch::X86]
    } else {
        &[ScmpArch::X8664]
    };
    for &arch in arches {
        if !ctx
            .is_arch_present(arch)
            .map_err(compile_err("arch present"))?
        {
            ctx.add_arch(arch)
                .map_err(compile_err(format!("add arch {arch:?}")))?;
        }
    }
    ctx.set_act_badarch(ScmpAction::Errno(libc::EPERM))
        .map_err(compile_err("badarch action"))?;
    // The launcher sets no_new_privs itself.
    ctx.set_ctl_nnp(false).map_err(compile_err("nnp"))?;
    // Binary-tree dispatch keeps the long allow-list cheap per syscall.
    let _ = ctx.set_ctl_optimize(2);
    for rule in &section.rules {
        if rule.condition.is_some_and(|c| !c.holds(features)) {
            continue;
        }
        // libseccomp refuses a rule whose action is the default; such lines
        // document intent (e.g. "clone3 -> ENOSYS") and are met by the default.
        if rule.args.is_empty() && rule.action == section.default {
            continue;
        }
        for name in &rule.syscalls {
            let Ok(sys) = ScmpSyscall::from_name(name) else {
                unknown.push(name.clone());
                continue;
            };
            let action = rule.action.to_scmp();
            let res = if rule.args.is_empty() {
                ctx.add_rule(action, sys)
            } else {
                let cmps: Vec<_> = rule.args.iter().map(to_scmp_cmp).collect();
                ctx.add_rule_conditional(action, sys, &cmps)
            };
            res.map_err(compile_err(format!(
                "[{}] line {}: rule for {name}",
                section.name, rule.line
            )))?;
        }
    }
    let bytes = export_bpf(&ctx)?;
    Ok(Program {
        name: section.name.clone(),
        bytes,
    })
}

fn export_bpf(ctx: &ScmpFilterContext) -> Result<Vec<u8>, PolicyError> {
    let fd = memfd("porthole-seccomp")?;
    ctx.export_bpf(&fd)
        .map_err(compile_err("seccomp_export_bpf"))?;
    let mut file = std::fs::File::from(fd);
    file.seek(SeekFrom::Start(0))
        .map_err(|source| PolicyError::Io {
            op: "seek memfd",
            source,
        })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| PolicyError::Io {
            op: "read memfd",
            source,
        })?;
    Ok(bytes)
}

fn memfd(name: &str) -> Result<OwnedFd, PolicyError> {
    let cname = std::ffi::CString::new(name).expect("no NUL in memfd name");
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call;
    // memfd_create only reads it.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(PolicyError::Io {
            op: "memfd_create",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: memfd_create just returned this fd and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
