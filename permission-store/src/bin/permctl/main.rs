//! `permctl`: inspect and change what apps were granted.
//!
//! It talks to the running permission store over D-Bus, so every change
//! fires `Changed` for the services that listen; when no store runs (and
//! none can be activated), or with `--db`, it opens the database itself
//! through the same library: read-only for the read commands, which never
//! create a file, and never moving a damaged file aside (the service does
//! that, at its start). Only `grant` creates a missing database.

mod backend;
mod commands;
mod gvdb;
mod output;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, also listed in `--help`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    /// clap's own code for bad usage.
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const UNAVAILABLE: u8 = 4;
}

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  the store reported an error
  2  bad arguments (unknown command or option, invalid table name, empty
     permission, bad duration)
  3  no such table, id, app or grant
  4  the store could not be reached or opened (missing or damaged database,
     a directory given as the database, a service that failed to start or
     did not answer, another store on the bus, no bus)

Without --db, permctl uses the running porthole-permission-store on the
session bus (starting it by D-Bus activation where installed), else opens
$XDG_DATA_HOME/porthole/permissions.db directly. Only grant creates a
missing database: read commands open files read-only, and revoke and reset
answer 3 (nothing to remove). Nothing permctl does moves a damaged database
aside (the service does that when it starts). Times are UTC.";

#[derive(Parser, Debug)]
#[command(name = "permctl", version, about = "Inspect and change the grants in the Porthole permission store", after_help = AFTER_HELP)]
pub struct Cli {
    /// Open this database file directly instead of using the D-Bus service.
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Print machine-readable JSON (read commands).
    #[arg(long, global = true)]
    json: bool,
    /// Wait at most this many seconds for each answer of the D-Bus service
    /// (its start by activation included), then exit with status 4.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 25,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List the tables that hold at least one id.
    Tables,
    /// List every id of TABLE with its grants (or just ID).
    List {
        /// Table name, e.g. devices, notifications, network (see `permctl tables`).
        table: String,
        /// Only this id of the table (default: every id).
        id: Option<String>,
    },
    /// Show every grant of one app across all tables.
    Show {
        /// App id as the store holds it: org.example.App for Flatpak, "" for host apps.
        #[arg(value_name = "APP_ID")]
        app: String,
    },
    /// Grant APP the PERMISSIONs on ID in TABLE (replacing its previous list).
    Grant {
        /// Table name, e.g. devices, notifications, network.
        table: String,
        /// The id within the table (what the grant is about).
        id: String,
        /// App id as the store holds it: org.example.App for Flatpak, "" for host apps.
        #[arg(value_name = "APP_ID")]
        app: String,
        /// Permission strings; their meaning belongs to the table's portal.
        #[arg(value_name = "PERMISSION", required = true)]
        permissions: Vec<String>,
        /// Let the grant lapse after this long: e.g. 90s, 30m, 12h, 7d.
        #[arg(long, value_name = "DURATION", value_parser = commands::parse_duration)]
        expires_in: Option<u64>,
    },
    /// Remove APP's grant on ID in TABLE, or only the PERMISSIONs given.
    Revoke {
        /// Table name, e.g. devices, notifications, network.
        table: String,
        /// The id within the table (what the grant is about).
        id: String,
        /// App id as the store holds it: org.example.App for Flatpak, "" for host apps.
        #[arg(value_name = "APP_ID")]
        app: String,
        /// Only these permissions (default: the whole grant).
        #[arg(value_name = "PERMISSION")]
        permissions: Vec<String>,
    },
    /// Remove every grant of APP_ID in every table.
    Reset {
        /// App id as the store holds it: org.example.App for Flatpak, "" for host apps.
        #[arg(value_name = "APP_ID")]
        app: String,
    },
    /// Show the audit history, newest first.
    History {
        /// Only changes in this table.
        #[arg(long)]
        table: Option<String>,
        /// Only changes to this app's grants.
        #[arg(long, value_name = "APP_ID")]
        app: Option<String>,
        /// At most this many records (0: all).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Import xdg-permission-store's tables (GVDB files), keeping what the
    /// store holds beside them; importing the same files again changes
    /// nothing. A file that cannot be read is named and skipped (exit 1).
    Import {
        /// The directory of table files [default: $XDG_DATA_HOME/flatpak/db].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Write every table as a GVDB file that xdg-permission-store reads, to
    /// switch back to it (grants with an expiry are left out: it would keep
    /// them for ever).
    Export {
        /// The directory to write [default: $XDG_DATA_HOME/flatpak/db].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(exit::FAILURE);
        }
    };
    match rt.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            output::error(&e.message);
            ExitCode::from(e.code)
        }
    }
}
