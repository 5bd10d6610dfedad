//! `porthole run [OPTIONS] APP_ID -- COMMAND [ARGS...]`

use std::ffi::OsString;
use std::path::PathBuf;

use porthole_identity::AppId;
use porthole_launcher::cgroup::Limits;
use porthole_launcher::exit_code;
use porthole_launcher::flatpak;
use porthole_launcher::launch::{self, RunRequest};
use porthole_launcher::permissions::{self, Permissions};

const EXIT_CODES: &str = "\
Exit status:
  the app's own status (128+N if it was killed by signal N), or
  116  invalid --branch, --arch or --runtime ref (e.g. with `..`)
  117  the installed app's metadata, overrides or deploy are damaged
  118  the installed app's runtime is not installed
  119  APP_ID is not installed (no COMMAND given: a Flatpak-installed app)
  121  unknown option or malformed option value
  122  invalid or missing APP_ID (Flatpak rules: reverse DNS, 3+ elements)
  123  missing COMMAND after `--`
  124  --app-dir, --runtime or --filesystem path cannot be read
  125  the sandbox could not be set up
  126  COMMAND found but not executable
  127  COMMAND not found inside the sandbox";

/// Start COMMAND for APP_ID in a new sandbox, or, without `--`, the app
/// APP_ID as Flatpak installed it (its files at /app, its runtime at /usr,
/// its permissions), with ARGS.
///
/// Everything after `--` (or after APP_ID) belongs to the app, even words
/// that start with `-`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct RunArgs {
    /// Share with the host: `network` (otherwise only a private `lo`).
    #[arg(long, value_name = "WHAT")]
    share: Vec<String>,
    /// Allow a feature (Flatpak's vocabulary): `multiarch` (the i386 ABI,
    /// under the same filter) or `devel` (ptrace and perf_event_open within
    /// the sandbox). bluetooth, canbus and per-app-dev-shm are not
    /// implemented yet and refused.
    #[arg(long, value_name = "FEATURE")]
    allow: Vec<String>,
    /// Give the app a session socket: wayland, pulseaudio or x11.
    #[arg(long, value_name = "SOCKET")]
    socket: Vec<String>,
    /// Share a host path at the same place: PATH, PATH:ro or ~/PATH.
    #[arg(long, value_name = "PATH[:ro]")]
    filesystem: Vec<String>,
    /// Set an environment variable inside (not LD_*, not bus addresses).
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The app's files, read-only at /app (DIR/files if present; DIR/metadata
    /// supplies default permissions in Flatpak's keyfile format).
    #[arg(long, value_name = "DIR")]
    app_dir: Option<PathBuf>,
    /// Take /usr (and /etc basics) from DIR, e.g. a debootstrapped tree;
    /// for an installed app also a runtime ref, ID[/ARCH[/BRANCH]] (as
    /// `flatpak run --runtime`).
    #[arg(long, value_name = "DIR|REF")]
    runtime: Option<PathBuf>,
    /// Installed app: the branch to run (default: the current one).
    #[arg(long, value_name = "BRANCH")]
    branch: Option<String>,
    /// Installed app: the architecture to run.
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
    /// Installed app: run this instead of the metadata's command.
    #[arg(long = "command", value_name = "COMMAND")]
    app_command: Option<String>,
    /// Session-bus name the app may talk to (NAME or a NAME.* subtree).
    #[arg(long, value_name = "NAME")]
    talk_name: Vec<String>,
    /// Session-bus name the app may own.
    #[arg(long, value_name = "NAME")]
    own_name: Vec<String>,
    /// Session-bus name the app may see (but not call).
    #[arg(long, value_name = "NAME")]
    see_name: Vec<String>,
    /// System-bus name the app may talk to (the sandbox gets a filtered
    /// system bus only with a --system-*-name grant).
    #[arg(long, value_name = "NAME")]
    system_talk_name: Vec<String>,
    /// System-bus name the app may own.
    #[arg(long, value_name = "NAME")]
    system_own_name: Vec<String>,
    /// System-bus name the app may see.
    #[arg(long, value_name = "NAME")]
    system_see_name: Vec<String>,
    /// Memory limit of the instance's cgroup, e.g. 512M.
    #[arg(long, value_name = "SIZE")]
    memory_max: Option<String>,
    /// Process limit of the instance's cgroup.
    #[arg(long, value_name = "N")]
    pids_max: Option<String>,
    /// Kill the sandbox when `porthole run` dies (default true).
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    die_with_parent: bool,
    /// Do not bind the document store's view of the app at
    /// /run/user/UID/doc (as Flatpak's option of that name).
    #[arg(long)]
    no_documents_portal: bool,
    /// Print the mount plan, environment and filter, start nothing.
    #[arg(long)]
    dry_run: bool,
    /// Application id, e.g. org.example.App.
    #[arg(value_name = "APP_ID")]
    app_id: Option<String>,
    /// After `--`: the command and its arguments; without `--`: the
    /// installed app's arguments.
    #[arg(
        value_name = "COMMAND|ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<OsString>,
}

fn fail(code: i32, msg: impl std::fmt::Display) -> i32 {
    eprintln!("porthole: {msg}");
    code
}

/// Whether the words after APP_ID came after `--` (a command) rather
/// than right after APP_ID (an installed app's arguments). clap drops the
/// `--` it stops at, so the raw command line is asked: the `n` trailing
/// words are the last `n` of it, and `--` is the word before them.
fn after_separator(raw: &[OsString], n: usize) -> bool {
    raw.len() > n && raw[raw.len() - n - 1] == "--"
}

fn request(args: RunArgs) -> Result<(RunRequest, bool), i32> {
    let Some(app_id) = args.app_id.clone() else {
        return Err(fail(
            exit_code::INVALID_APP_ID,
            "missing APP_ID (usage: porthole run [OPTIONS] APP_ID [ARGS...] or APP_ID -- COMMAND [ARGS...])",
        ));
    };
    let app_id = AppId::parse(&app_id).map_err(|e| {
        fail(
            exit_code::INVALID_APP_ID,
            format!("invalid app id {app_id:?}: {e}"),
        )
    })?;
    let raw: Vec<OsString> = std::env::args_os().collect();
    let installed_mode = !after_separator(&raw, args.command.len());
    if !installed_mode {
        if args.command.is_empty() {
            return Err(fail(
                exit_code::MISSING_COMMAND,
                "missing COMMAND after `--` (usage: porthole run [OPTIONS] APP_ID -- COMMAND [ARGS...])",
            ));
        }
        if args.branch.is_some() || args.arch.is_some() || args.app_command.is_some() {
            return Err(fail(
                exit_code::USAGE,
                "--branch, --arch and --command are for installed apps (no `--` COMMAND)",
            ));
        }
    }
    let usage = |e: permissions::PermissionError| fail(exit_code::USAGE, e);
    // `~/` means the home the app's data lives under (GLib's rule).
    let home = porthole_launcher::environ::current_home();
    let mut perms = Permissions::default();
    for s in &args.share {
        perms.network |= permissions::parse_share(s).map_err(usage)?;
    }
    for a in &args.allow {
        permissions::parse_allow(a, &mut perms.features).map_err(usage)?;
    }
    for s in &args.socket {
        perms
            .sockets
            .insert(permissions::parse_socket(s).map_err(usage)?);
    }
    for f in &args.filesystem {
        perms
            .filesystems
            .push(permissions::parse_filesystem(f, &home).map_err(usage)?);
    }
    for e in &args.env {
        perms.env.push(permissions::parse_env(e).map_err(usage)?);
    }
    perms.talk_names = args.talk_name;
    perms.own_names = args.own_name;
    perms.see_names = args.see_name;
    perms.system_talk_names = args.system_talk_name;
    perms.system_own_names = args.system_own_name;
    perms.system_see_names = args.system_see_name;
    let limits = Limits {
        memory_max: args
            .memory_max
            .as_deref()
            .map(permissions::parse_size)
            .transpose()
            .map_err(usage)?,
        pids_max: args
            .pids_max
            .as_deref()
            .map(permissions::parse_count)
            .transpose()
            .map_err(usage)?,
    };
    let mut req = RunRequest {
        app_id,
        command: Vec::new(),
        permissions: perms,
        app_dir: args.app_dir,
        runtime: args.runtime,
        limits,
        die_with_parent: args.die_with_parent,
        documents_portal: !args.no_documents_portal,
        installed: None,
    };
    if installed_mode {
        installed(
            &mut req,
            args.command,
            args.branch,
            args.arch,
            args.app_command,
            &home,
        )?;
    } else {
        req.command = args.command;
    }
    Ok((req, args.dry_run))
}

/// Resolves an installed app into `req`: its files, runtime, command and
/// permissions; one warning line names what porthole does not provide.
fn installed(
    req: &mut RunRequest,
    app_args: Vec<OsString>,
    branch: Option<String>,
    arch: Option<String>,
    command: Option<String>,
    home: &std::path::Path,
) -> Result<(), i32> {
    if req.app_dir.is_some() {
        return Err(fail(
            exit_code::USAGE,
            "--app-dir runs a directory, not an installed app: give the command after `--`",
        ));
    }
    // `--runtime=/path` keeps naming a runtime directory; anything else
    // is a runtime ref.
    let runtime_ref = match req.runtime.take() {
        Some(r) if flatpak::is_runtime_ref(r.as_os_str()) => Some(
            r.into_os_string()
                .into_string()
                .map_err(|r| fail(exit_code::BAD_REF, format!("--runtime={r:?}: not UTF-8")))?,
        ),
        other => {
            req.runtime = other;
            None
        }
    };
    let query = flatpak::Query {
        app_id: req.app_id.as_str().to_owned(),
        arch,
        branch,
        runtime: runtime_ref,
        command,
        args: app_args,
        cli: req.permissions.clone(),
    };
    let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_owned());
    let inst = flatpak::resolve(&query, &|k| std::env::var_os(k), &home)
        .map_err(|e| fail(e.exit_code(), e))?;
    if !inst.grants.unsupported.is_empty() {
        super::print_warning(porthole_launcher::Warning::FlatpakUnsupported {
            items: inst.grants.unsupported.clone(),
        });
    }
    req.command = inst.argv.clone();
    req.installed = Some(Box::new(inst));
    Ok(())
}

pub fn main(args: RunArgs) -> i32 {
    let (req, dry_run) = match request(args) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let prepared = match launch::prepare(&req, &mut super::print_warning) {
        Ok(p) => p,
        Err(e) => return fail(e.exit_code(), e),
    };
    if dry_run {
        print!("{}", launch::describe(&prepared));
        return 0;
    }
    match launch::execute(prepared, &mut super::print_warning) {
        Ok(code) => code,
        Err(e) => fail(e.exit_code(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn a_command_is_what_follows_the_separator() {
        // (command line, trailing words clap kept, after `--`?)
        for (line, n, after) in [
            ("porthole run org.a.B", 0, false),
            ("porthole run org.a.B x --y", 2, false),
            ("porthole run org.a.B --", 0, true),
            ("porthole run org.a.B -- /bin/true -x", 2, true),
            ("porthole run --share=network org.a.B -- --", 1, true),
            // After the app's first argument, `--` is one of its arguments.
            ("porthole run org.a.B x -- y", 3, false),
        ] {
            assert_eq!(after_separator(&words(line), n), after, "{line}");
        }
    }
}
