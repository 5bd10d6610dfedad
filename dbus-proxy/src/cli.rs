//! xdg-dbus-proxy's command line:
//!
//! ```text
//! porthole-dbus-proxy [--fd=FD] [--args=FD] [--busy-poll[=USECS]] ADDRESS PATH [OPTION...] [ADDRESS PATH [OPTION...] ...]
//!   --filter --log --sloppy-names --see=NAME --talk=NAME --own=NAME
//!   --call=NAME=RULE --broadcast=NAME=RULE
//! ```
//!
//! Options apply to the ADDRESS PATH pair before them, so the meaning
//! depends on order; that is why this is parsed by hand and not with clap.
//! `--busy-poll` is ours (xdg-dbus-proxy has no such option) and, like
//! `--fd`, applies to the whole process wherever it stands.

use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::policy::{Kind, Level, Policy, PolicyError};

/// One listening socket and the bus it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub address: String,
    pub path: PathBuf,
    pub filter: bool,
    pub log: bool,
    pub sloppy_names: bool,
    pub policy: Policy,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `--fd`: written to when ready; the proxy exits when it closes.
    pub sync_fd: Option<RawFd>,
    pub proxies: Vec<ProxySpec>,
    /// `--busy-poll[=USECS]`: spin for up to this long before sleeping
    /// (see [`crate::busy_poll`]); `None`: never spin.
    pub busy_poll: Option<Duration>,
    pub help: bool,
    pub version: bool,
}

#[derive(Debug, Error)]
pub enum CliError {
    #[error("unknown argument {0}")]
    Unknown(String),
    #[error("{0} must follow a bus address and path")]
    NoProxy(String),
    #[error("invalid fd in {0}")]
    Fd(String),
    #[error("{0}: expected microseconds from 1 to 10000")]
    BusyPoll(String),
    #[error("reading --args fd {fd}: {source}")]
    ReadArgs { fd: RawFd, source: std::io::Error },
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("bus address {0} has no socket path")]
    MissingPath(String),
    #[error("no bus address given")]
    NoAddress,
    #[error("{0}: expected NAME=RULE")]
    Rule(String),
}

pub const USAGE: &str = "\
Usage: porthole-dbus-proxy [--fd=FD] [--args=FD] [--busy-poll[=USECS]] ADDRESS PATH [OPTION...] [ADDRESS PATH [OPTION...] ...]

Listens on the unix socket PATH and connects each client to the bus at ADDRESS.

Options (apply to the preceding ADDRESS PATH):
  --filter              Enable filtering
  --log                 Print each message and its verdict
  --sloppy-names        Make all unique names visible
  --see=NAME            Allow seeing NAME (NAME.* for a subtree)
  --talk=NAME           Allow talking to NAME
  --own=NAME            Allow owning NAME
  --call=NAME=RULE      Allow calls to NAME matching RULE
  --broadcast=NAME=RULE Allow broadcasts from NAME matching RULE
  --fd=FD               Write to FD when ready, exit when it closes
  --args=FD             Read NUL-separated arguments from FD
  --busy-poll[=USECS]   Poll the sockets for up to USECS (default 200) before
                        sleeping. Costs CPU; lowers latency only for a client
                        calling back to back on an idle machine with a spare
                        core. Off by default.
RULE: [INTERFACE.METHOD|INTERFACE.*|*][@/PATH[/*]]
";

#[derive(Default)]
struct State {
    args: Args,
    pending_address: Option<String>,
}

/// Parses the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Args, CliError> {
    let mut st = State::default();
    parse_into(&mut st, argv)?;
    if let Some(addr) = st.pending_address {
        return Err(CliError::MissingPath(addr));
    }
    if st.args.proxies.is_empty() && !st.args.help && !st.args.version {
        return Err(CliError::NoAddress);
    }
    Ok(st.args)
}

fn parse_fd(arg: &str, v: &str) -> Result<RawFd, CliError> {
    v.parse::<RawFd>()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| CliError::Fd(arg.to_owned()))
}

fn parse_into<I: IntoIterator<Item = String>>(st: &mut State, argv: I) -> Result<(), CliError> {
    for arg in argv {
        if let Some(v) = arg.strip_prefix("--args=") {
            let fd = parse_fd(&arg, v)?;
            // SAFETY: the caller handed us this fd for exactly this use;
            // we take ownership and close it after reading.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            let mut data = Vec::new();
            f.read_to_end(&mut data)
                .map_err(|source| CliError::ReadArgs { fd, source })?;
            let more: Vec<String> = data
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            parse_into(st, more)?;
            continue;
        }
        if let Some(v) = arg.strip_prefix("--fd=") {
            st.args.sync_fd = Some(parse_fd(&arg, v)?);
            continue;
        }
        if arg == "--busy-poll" {
            st.args.busy_poll = Some(crate::busy_poll::MAX_WINDOW);
            continue;
        }
        if let Some(v) = arg.strip_prefix("--busy-poll=") {
            let us = v
                .parse::<u64>()
                .ok()
                .filter(|us| (1..=10_000).contains(us))
                .ok_or_else(|| CliError::BusyPoll(arg.clone()))?;
            st.args.busy_poll = Some(Duration::from_micros(us));
            continue;
        }
        if arg == "--help" || arg == "-h" {
            st.args.help = true;
            continue;
        }
        if arg == "--version" {
            st.args.version = true;
            continue;
        }
        if arg.starts_with("--") {
            let Some(proxy) = st.args.proxies.last_mut() else {
                return Err(CliError::NoProxy(arg));
            };
            if st.pending_address.is_some() {
                return Err(CliError::NoProxy(arg));
            }
            apply_option(proxy, &arg)?;
            continue;
        }
        match st.pending_address.take() {
            None => st.pending_address = Some(arg),
            Some(address) => st.args.proxies.push(ProxySpec {
                address,
                path: PathBuf::from(arg),
                filter: false,
                log: false,
                sloppy_names: false,
                policy: Policy::default(),
            }),
        }
    }
    Ok(())
}

fn apply_option(p: &mut ProxySpec, arg: &str) -> Result<(), CliError> {
    let (key, value) = match arg.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (arg, None),
    };
    match (key, value) {
        ("--filter", None) => p.filter = true,
        ("--log", None) => p.log = true,
        ("--sloppy-names", None) => p.sloppy_names = true,
        ("--see", Some(n)) => p.policy.add_level(n, Level::See)?,
        ("--talk", Some(n)) => p.policy.add_level(n, Level::Talk)?,
        ("--own", Some(n)) => p.policy.add_level(n, Level::Own)?,
        ("--call", Some(v)) | ("--broadcast", Some(v)) => {
            let (name, rule) = v
                .split_once('=')
                .ok_or_else(|| CliError::Rule(arg.into()))?;
            let kind = if key == "--call" {
                Kind::Call
            } else {
                Kind::Broadcast
            };
            p.policy.add_rule(name, kind, rule)?;
        }
        _ => return Err(CliError::Unknown(arg.to_owned())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn pairs_and_options() {
        let a = parse(s(&[
            "--fd=5",
            "unix:path=/a",
            "/tmp/one",
            "--filter",
            "--talk=org.a.*",
            "--call=org.b=org.b.I.M@/x",
            "unix:path=/b",
            "/tmp/two",
            "--log",
        ]))
        .unwrap();
        assert_eq!(a.sync_fd, Some(5));
        assert_eq!(a.proxies.len(), 2);
        assert!(a.proxies[0].filter && !a.proxies[0].log);
        assert!(!a.proxies[1].filter && a.proxies[1].log);
        assert_eq!(
            a.proxies[0].policy.lookup("org.a.x", &mut Vec::new()),
            Level::Talk
        );
        assert_eq!(
            a.proxies[0].policy.lookup("org.b", &mut Vec::new()),
            Level::Talk
        );
    }

    #[test]
    fn busy_poll_is_off_unless_asked_for() {
        let a = parse(s(&["unix:path=/a", "/tmp/one", "--filter"])).unwrap();
        assert_eq!(a.busy_poll, None);
        // Anywhere on the line, not tied to a pair.
        let a = parse(s(&["--busy-poll", "unix:path=/a", "/tmp/one"])).unwrap();
        assert_eq!(a.busy_poll, Some(crate::busy_poll::MAX_WINDOW));
        let a = parse(s(&["unix:path=/a", "/tmp/one", "--busy-poll=50"])).unwrap();
        assert_eq!(a.busy_poll, Some(Duration::from_micros(50)));
        assert_eq!(a.proxies.len(), 1);
        for bad in [
            "--busy-poll=0",
            "--busy-poll=10001",
            "--busy-poll=x",
            "--busy-poll=",
        ] {
            assert!(
                matches!(parse(s(&["a", "b", bad])), Err(CliError::BusyPoll(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse(s(&["--talk=org.a"])),
            Err(CliError::NoProxy(_))
        ));
        assert!(matches!(
            parse(s(&["unix:path=/a"])),
            Err(CliError::MissingPath(_))
        ));
        assert!(matches!(
            parse(s(&["a", "b", "--bogus"])),
            Err(CliError::Unknown(_))
        ));
        assert!(matches!(
            parse(s(&["a", "b", "--talk=bad"])),
            Err(CliError::Policy(_))
        ));
        assert!(matches!(parse(s(&[])), Err(CliError::NoAddress)));
    }

    #[test]
    fn args_fd() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"unix:path=/a\0/tmp/x\0--filter\0").unwrap();
        drop(w);
        use std::os::fd::IntoRawFd;
        let fd = r.into_raw_fd();
        let a = parse(vec![format!("--args={fd}"), "--see=org.q".into()]).unwrap();
        assert_eq!(a.proxies.len(), 1);
        assert!(a.proxies[0].filter);
        assert_eq!(
            a.proxies[0].policy.lookup("org.q", &mut Vec::new()),
            Level::See
        );
    }
}
