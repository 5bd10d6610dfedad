//! `porthole`: parses the command line, sets up logging, calls the library.
//! One file per subcommand under `commands/`.
//!
//! `no_main`: every `porthole run` pays for the process start-up, and std's
//! runtime set-up before `fn main` (main-thread stack guard, which makes
//! glibc read and parse /proc/self/maps; the alternate signal stack and
//! the stack-overflow handlers) is about 0.1 ms of a launch of a few ms.
//! [`main`] keeps the parts that matter here: standard fds 0-2 that are
//! open, SIGPIPE ignored (errors instead of death on a closed pipe, as
//! before), and a panic exits with status 101.
#![cfg_attr(not(test), no_main)]
// The unit-test build has the harness's main, so nothing calls ours.
#![cfg_attr(test, allow(dead_code))]

mod commands;
mod observability;

use clap::{Parser, Subcommand};
use porthole_launcher::exit_code;

/// Run desktop apps in a sandbox; list, stop and enter running instances.
#[derive(Debug, Parser)]
#[command(name = "porthole", version, about, propagate_version = true)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(Box<commands::run::RunArgs>),
    Ps(commands::ps::PsArgs),
    Kill(commands::kill::KillArgs),
    Enter(commands::enter::EnterArgs),
}

/// clap's message, reduced to its first line: one clear line on stderr.
fn usage_error(err: &clap::Error) -> ! {
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("porthole: {first} (see --help)");
    std::process::exit(exit_code::USAGE)
}

/// Opens /dev/null on any of fds 0-2 that is closed, so that no file we open
/// later takes its number and receives our messages (std's runtime does the
/// same before `fn main`).
fn sanitize_standard_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is an array of three initialised pollfd records that
    // poll(2) may write `revents` into; timeout 0 never blocks.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for p in fds {
        if p.revents & libc::POLLNVAL != 0 {
            // SAFETY: a plain open(2) of a NUL-terminated literal; the lowest
            // free fd, i.e. the closed standard one, is returned and kept
            // open for the life of the process on purpose.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// The C entry point (see the crate documentation for why not `fn main`).
/// std captures argc/argv itself on glibc, so `std::env::args` works.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // Before anything else: --die-with-parent compares against this parent.
    porthole_launcher::init::record_parent();
    sanitize_standard_fds();
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // and has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // An ignored SIGCHLD (inherited across exec from a careless caller)
    // would make the kernel reap our children by itself: waitpid would
    // then fail with ECHILD and the app's exit status be lost.
    // SAFETY: as above; SIG_DFL installs no handler.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    // A panic: the hook printed the message; exit 101, as std would.
    std::panic::catch_unwind(run).unwrap_or(101)
}

fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => match err.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                let _ = err.print();
                std::process::exit(0)
            }
            clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = err.print();
                std::process::exit(exit_code::USAGE)
            }
            _ => usage_error(&err),
        },
    };
    observability::init(&cli.log_level);
    let code = match cli.command {
        Command::Run(args) => commands::run::main(*args),
        Command::Ps(args) => commands::ps::main(args),
        Command::Kill(args) => commands::kill::main(args),
        Command::Enter(args) => commands::enter::main(args),
    };
    std::process::exit(code)
}
